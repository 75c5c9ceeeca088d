//! The drawing backends: the embedded font, the colour palette, and a PNG backend that
//! rasterises with that font (SVG uses plotters' own).

use super::*;

pub(super) const FONT: &str = "sans-serif";
pub(super) static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(super) fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|name| plotters::style::register_font(name, FontStyle::Normal, FONT_BYTES).is_ok())
    });
    if ok {
        Ok(())
    } else {
        bail!("embedded font assets/DejaVuSans.ttf could not be loaded")
    }
}

/// Fixed palette (matplotlib "tab10").
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of each series, see [`Series`].
pub(super) fn line_colors(series: &[Series]) -> Vec<RGBColor> {
    let mut next = 0;
    let mut out: Vec<RGBColor> = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        let parent = (s.style == Style::Dashed)
            .then(|| {
                (0..i).find(|&j| {
                    let p = &series[j].name;
                    !p.is_empty()
                        && series[j].style != Style::Dashed
                        && s.name
                            .strip_prefix(p.as_str())
                            .is_some_and(|r| r.starts_with(' '))
                })
            })
            .flatten();
        out.push(match parent {
            Some(j) => out[j],
            None => {
                next += 1;
                PALETTE[(next - 1) % PALETTE.len()]
            }
        });
    }
    out
}

/// `BitMapBackend` with its own text rasteriser: plotters' `ab_glyph` drawing drops each
/// glyph's side bearing and rounds baselines per glyph, which makes small text uneven.
/// Layout metrics (advance widths, kerning, size / 1.24 line height) match plotters' own.
pub(super) struct PngBackend<'a> {
    pub(super) inner: BitMapBackend<'a>,
    pub(super) font: FontRef<'static>,
}

impl<'a> PngBackend<'a> {
    pub(super) fn new(path: &'a Path, size: (u32, u32)) -> Result<Self> {
        let font =
            FontRef::try_from_slice(FONT_BYTES).map_err(|e| anyhow!("embedded font: {e}"))?;
        Ok(Self {
            inner: BitMapBackend::new(path, size),
            font,
        })
    }
}

pub(super) type BackendResult<'a> =
    std::result::Result<(), DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

impl<'a> DrawingBackend for PngBackend<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;
    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult<'a> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult<'a> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> BackendResult<'a> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: pb::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_line(a, b, s)
    }
    fn draw_rect<S: pb::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: pb::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_path(path, s)
    }
    fn draw_circle<S: pb::BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: pb::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.fill_polygon(path, s)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (w, h): (u32, u32),
        src: &[u8],
    ) -> BackendResult<'a> {
        self.inner.blit_bitmap(pos, (w, h), src)
    }
    fn draw_text<S: pb::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> BackendResult<'a> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = self.font.as_scaled(style.size() as f32);
        let (mut caret, mut prev, mut glyphs) = (0.0f32, None, vec![]);
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(font.scale(), ab_glyph::point(caret, 0.0)));
            caret += font.h_advance(id);
            prev = Some(id);
        }
        let height = (style.size() / 1.24) as f32;
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -caret / 2.0,
            HPos::Right => -caret,
        };
        let baseline = match style.anchor().v_pos {
            VPos::Top => height,
            VPos::Center => height / 2.0,
            VPos::Bottom => 0.0,
        };
        let (dx, dy) = (dx.round() as i32, baseline.round() as i32);
        let trans = style.transform();
        let mut result = Ok(());
        for g in glyphs {
            let Some(outline) = font.outline_glyph(g) else {
                continue;
            };
            let b = outline.px_bounds();
            let (x0, y0) = (b.min.x as i32 + dx, b.min.y as i32 + dy);
            outline.draw(|x, y, cov| {
                if result.is_ok() && cov > 0.0 {
                    let (tx, ty) = trans.transform(x0 + x as i32, y0 + y as i32);
                    let c = BackendColor {
                        alpha: color.alpha * cov.min(1.0) as f64,
                        rgb: color.rgb,
                    };
                    result = self.inner.draw_pixel((pos.0 + tx, pos.1 + ty), c);
                }
            });
        }
        result
    }
}

pub(super) trait OrErr<T> {
    fn or_err(self, what: &str) -> Result<T>;
}
impl<T, E: Display> OrErr<T> for std::result::Result<T, E> {
    fn or_err(self, what: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{what}: {e}"))
    }
}
