//! The `seqpipe` binary: parse the flags, run the command, map errors to exit codes (2 for a
//! bad pipeline file or bad flags, 1 for a failed stage or any other error, 130 on Ctrl-C).

use clap::Parser;

fn main() {
    // A closed pipe (`seqpipe kinds | head -1`) ends the program quietly, as other Unix
    // tools do, instead of a panic on the next print.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = seqpipe::cli::Cli::parse();
    if let Err(e) = seqpipe::nn::set_num_threads(cli.threads) {
        eprintln!("warning: {e:#}");
    }
    // Matrix-product kernels are chosen on this machine and remembered (nn::tune).
    seqpipe::nn::set_kernel_cache(seqpipe::nn::default_kernel_cache());
    let root = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the current folder: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = seqpipe::app::run(cli, &root) {
        if e.downcast_ref::<seqpipe::diagnostic::PipelineError>()
            .is_some()
        {
            eprintln!("{e:#}"); // each diagnostic says `error:` itself
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(seqpipe::app::exit_code(&e));
    }
}
