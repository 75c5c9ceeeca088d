//! Chart rendering tests.

use super::*;

fn series(name: &str, points: Vec<(f64, f64)>, style: Style) -> Series {
    Series {
        name: name.into(),
        points,
        style,
    }
}

fn line_chart(series: Vec<Series>, x_scale: Scale, y_scale: Scale) -> Chart {
    Chart::Line(LineChart {
        title: "Loss curve".into(),
        x_label: "epoch".into(),
        y_label: "perplexity".into(),
        x_scale,
        y_scale,
        series,
    })
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Render to SVG and PNG in a temp dir; check the PNG header and return the SVG text.
fn render_both(chart: &Chart, w: u32, h: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("plot.png");
    render(chart, &png, w, h).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 24);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), w);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), h);
    let svg = dir.path().join("plot.SVG");
    render(chart, &svg, w, h).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains(&format!("width=\"{w}\"")) && text.contains(&format!("height=\"{h}\"")));
    text
}

fn count(svg: &str, element: &str, attr: &str) -> usize {
    svg.lines()
        .filter(|l| l.trim_start().starts_with(element) && l.contains(attr))
        .count()
}

fn contains_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">{text}</text>")) || svg.contains(&format!(">\n{text}\n</text>"))
}

#[test]
fn line_chart_svg_and_png() {
    let chart = line_chart(
        vec![
            series(
                "train",
                (1..=20).map(|e| (e as f64, 30.0 / e as f64)).collect(),
                Style::Line,
            ),
            series(
                "valid",
                (1..=20).map(|e| (e as f64, 40.0 / e as f64)).collect(),
                Style::LineAndPoints,
            ),
            series(
                "test",
                (1..=20).map(|e| (e as f64, 50.0 / e as f64)).collect(),
                Style::Points,
            ),
        ],
        Scale::Linear,
        Scale::Log,
    );
    let svg = render_both(&chart, 640, 480);
    for t in [
        "Loss curve",
        "epoch",
        "perplexity",
        "train",
        "valid",
        "test",
    ] {
        assert!(contains_text(&svg, t), "missing text {t:?}");
    }
    // Per series colour: one data polyline and one legend sample (none for the points series).
    for (i, want) in [2, 2, 0].into_iter().enumerate() {
        assert_eq!(
            count(
                &svg,
                "<polyline",
                &format!("stroke=\"{}\"", hex(PALETTE[i]))
            ),
            want,
            "series {i}"
        );
    }
    assert_eq!(
        count(&svg, "<circle", &format!("fill=\"{}\"", hex(PALETTE[2]))),
        21
    ); // 20 + legend
}

#[test]
fn zipf_fit_lines_share_colour_and_are_dashed() {
    let pts = |a: f64| {
        (1..=1000)
            .map(|r| (r as f64, 1e4 / (r as f64).powf(a)))
            .collect::<Vec<_>>()
    };
    let chart = line_chart(
        vec![
            series("unigram", pts(1.0), Style::Line),
            series(
                "unigram fit",
                vec![(1.0, 1e4), (1000.0, 10.0)],
                Style::Dashed,
            ),
            series("bigram", pts(0.7), Style::Line),
            series(
                "bigram fit",
                vec![(1.0, 1e4), (1000.0, 1e4 / 1000f64.powf(0.7))],
                Style::Dashed,
            ),
        ],
        Scale::Log,
        Scale::Log,
    );
    let Chart::Line(c) = &chart else {
        unreachable!()
    };
    assert_eq!(
        line_colors(&c.series),
        vec![PALETTE[0], PALETTE[0], PALETTE[1], PALETTE[1]]
    );
    let svg = render_both(&chart, 800, 600);
    for t in [
        "unigram",
        "unigram fit",
        "bigram",
        "bigram fit",
        "1",
        "10",
        "100",
        "1000",
    ] {
        assert!(contains_text(&svg, t), "missing text {t:?}");
    }
    // A dashed line is many short polylines.
    assert!(
        count(
            &svg,
            "<polyline",
            &format!("stroke=\"{}\"", hex(PALETTE[0]))
        ) > 10
    );
}

#[test]
fn bar_chart_svg_and_png() {
    let chart = Chart::Bar(BarChart {
        title: "Test perplexity".into(),
        x_label: "model".into(),
        y_label: "ppl".into(),
        y_scale: Scale::Linear,
        groups: vec!["rnn".into(), "gru".into(), "lstm".into()],
        bars: vec![
            ("timemachine".into(), vec![8.0, 5.0, 5.5]),
            ("wikitext".into(), vec![12.0, f64::NAN, 9.0]),
        ],
    });
    let svg = render_both(&chart, 800, 600);
    for t in [
        "Test perplexity",
        "model",
        "ppl",
        "rnn",
        "gru",
        "lstm",
        "timemachine",
        "wikitext",
    ] {
        assert!(contains_text(&svg, t), "missing text {t:?}");
    }
    // Bars plus one legend swatch; the NaN bar is skipped.
    assert_eq!(
        count(&svg, "<rect", &format!("fill=\"{}\"", hex(PALETTE[0]))),
        4
    );
    assert_eq!(
        count(&svg, "<rect", &format!("fill=\"{}\"", hex(PALETTE[1]))),
        3
    );
    let log = Chart::Bar(BarChart {
        y_scale: Scale::Log,
        bars: vec![("x".into(), vec![0.0, -1.0, 1e6])],
        ..Default::default()
    });
    render_both(&log, 400, 300);
}

#[test]
fn histogram_svg_and_png() {
    let bins = |mu: f64| {
        (0..10)
            .map(|i| (i as f64, i as f64 + 1.0, 100.0 - (i as f64 - mu).powi(2)))
            .collect::<Vec<_>>()
    };
    let chart = Chart::Histogram(Histogram {
        title: "Lengths".into(),
        x_label: "tokens".into(),
        y_label: "count".into(),
        series: vec![("src".into(), bins(3.0)), ("tgt".into(), bins(6.0))],
    });
    let svg = render_both(&chart, 800, 600);
    for t in ["Lengths", "tokens", "count", "src", "tgt"] {
        assert!(contains_text(&svg, t), "missing text {t:?}");
    }
    for (i, c) in PALETTE[..2].iter().enumerate() {
        assert_eq!(
            count(&svg, "<polyline", &format!("stroke=\"{}\"", hex(*c))),
            1,
            "outline {i}"
        );
    }
}

#[test]
fn hostile_data_does_not_panic() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let diverged: Vec<(f64, f64)> = (1..=10)
        .map(|e| {
            (
                e as f64,
                if e < 6 {
                    10f64.powi(e * 6)
                } else if e == 6 {
                    inf
                } else {
                    nan
                },
            )
        })
        .collect();
    let cases = vec![
        vec![
            series("diverged", diverged.clone(), Style::Line),
            series("empty", vec![], Style::Dashed),
        ],
        vec![series(
            "nan only",
            vec![(nan, nan), (inf, 1.0), (1.0, -inf)],
            Style::Line,
        )],
        vec![series("one point", vec![(5.0, 5.0)], Style::Line)],
        vec![series(
            "constant",
            (0..10).map(|i| (i as f64, 0.0)).collect(),
            Style::LineAndPoints,
        )],
        vec![series(
            "gap",
            vec![(1.0, 1.0), (2.0, nan), (3.0, 3.0), (4.0, 4.0)],
            Style::Dashed,
        )],
        vec![series(
            "nonpositive",
            vec![
                (0.0, 0.0),
                (-1.0, 5.0),
                (2.0, -3.0),
                (3.0, 1e-300),
                (4.0, 1e300),
            ],
            Style::Points,
        )],
        vec![],
        (0..25)
            .map(|i| {
                series(
                    &format!("s{i}"),
                    vec![(i as f64, 1.0), (i as f64 + 1.0, 2.0)],
                    Style::Line,
                )
            })
            .collect(),
    ];
    for (i, s) in cases.into_iter().enumerate() {
        for (xs, ys) in [
            (Scale::Linear, Scale::Linear),
            (Scale::Linear, Scale::Log),
            (Scale::Log, Scale::Log),
        ] {
            let chart = line_chart(s.clone(), xs, ys);
            for ext in ["svg", "png"] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(format!("p.{ext}"));
                let r = render(&chart, &path, 300, 200);
                // Linear axes over 1e30 are fine; only an overflowing span may be refused.
                assert!(r.is_ok(), "case {i} {xs:?}/{ys:?} {ext}: {r:?}");
                assert!(std::fs::metadata(&path).unwrap().len() > 0);
            }
        }
    }
    let hist = Chart::Histogram(Histogram {
        series: vec![
            (
                "bad".into(),
                vec![(1.0, 1.0, 5.0), (nan, 2.0, 1.0), (3.0, 2.0, 1.0)],
            ),
            ("none".into(), vec![]),
            ("one".into(), vec![(0.0, 1.0, 0.0)]),
        ],
        ..Default::default()
    });
    let bars = Chart::Bar(BarChart {
        groups: vec!["a".into(); 200],
        bars: vec![("z".into(), vec![0.0; 3]), ("e".into(), vec![])],
        ..Default::default()
    });
    let empty_bars = Chart::Bar(BarChart::default());
    for c in [
        hist,
        bars,
        empty_bars,
        line_chart(
            vec![series(
                "huge",
                vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
                Style::Line,
            )],
            Scale::Linear,
            Scale::Log,
        ),
    ] {
        render_both(&c, 320, 240);
    }
    // An overflowing linear span is an error, not a panic.
    let huge = line_chart(
        vec![series(
            "huge",
            vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
            Style::Line,
        )],
        Scale::Linear,
        Scale::Linear,
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(render(&huge, &dir.path().join("h.svg"), 300, 200).is_err());
}

#[test]
fn bad_requests_are_errors() {
    let chart = line_chart(vec![], Scale::Linear, Scale::Linear);
    let dir = tempfile::tempdir().unwrap();
    assert!(render(&chart, &dir.path().join("p.jpg"), 300, 200).is_err());
    assert!(render(&chart, &dir.path().join("p"), 300, 200).is_err());
    assert!(render(&chart, &dir.path().join("p.png"), 10, 10).is_err());
    assert!(render(&chart, &dir.path().join("missing/p.png"), 300, 200).is_err());
    assert!(render(&chart, &dir.path().join("missing/p.svg"), 300, 200).is_err());
}

#[test]
fn output_is_deterministic() {
    let chart = line_chart(
        vec![
            series("a", vec![(1.0, 2.0), (2.0, 3.0)], Style::Line),
            series("b", vec![(1.0, 3.0)], Style::Points),
        ],
        Scale::Linear,
        Scale::Linear,
    );
    let dir = tempfile::tempdir().unwrap();
    for ext in ["svg", "png"] {
        let (p, q) = (
            dir.path().join(format!("1.{ext}")),
            dir.path().join(format!("2.{ext}")),
        );
        render(&chart, &p, 400, 300).unwrap();
        render(&chart, &q, 400, 300).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), std::fs::read(q).unwrap());
    }
}

#[test]
fn tick_formatting() {
    let labels = |t: Vec<(f64, String)>| t.into_iter().map(|t| t.1).collect::<Vec<_>>();
    assert_eq!(
        labels(linear_ticks(0.0, 1.0, 5)),
        ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    );
    assert_eq!(
        labels(linear_ticks(-0.3, 0.3, 6)),
        ["-0.3", "-0.2", "-0.1", "0.0", "0.1", "0.2", "0.3"]
    );
    assert_eq!(
        labels(linear_ticks(0.0, 3e6, 3)),
        ["0", "1e6", "2e6", "3e6"]
    );
    assert_eq!(
        labels(log_ticks(1.0, 1000.0, 10).0),
        ["1", "10", "100", "1000"]
    );
    let (big, minor) = log_ticks(1.0, 1e30, 8);
    assert_eq!(big.first().unwrap().1, "10⁰");
    assert!(
        big.len() <= 8 && big.iter().all(|t| t.1.starts_with("10")),
        "{big:?}"
    );
    assert!(!minor.is_empty());
    assert_eq!(
        labels(log_ticks(1e-5, 1e-3, 10).0),
        ["10⁻⁵", "10⁻⁴", "10⁻³"]
    );
    assert_eq!(labels(log_ticks(3.0, 30.0, 10).0), ["5", "10", "20"]);
    assert!(log_ticks(95.0, 105.0, 10).0.len() >= 2);
}
