use clap::Parser;

fn main() {
    let cli = seqpipe::cli::Cli::parse();
    if let Err(e) = seqpipe::nn::set_num_threads(cli.threads) {
        eprintln!("warning: {e:#}");
    }
    let root = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the current folder: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = seqpipe::app::run(cli, &root) {
        eprintln!("{e:#}");
        std::process::exit(seqpipe::app::exit_code(&e));
    }
}
