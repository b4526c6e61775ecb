//! Learning curves as PNG, drawn here (lines, axes, an 8×8 bitmap font) so that plotting needs no
//! system fonts, Python or network. A figure is a row of panels; each panel has a title, a y
//! range and named series of (x, y) points, drawn as polylines with a legend.
//!
//! Invariant: drawing never fails on data: empty series, one point, NaN or infinite values are
//! skipped, and a degenerate range is widened.

use std::path::Path;

use crate::error::{Error, Result};

/// One curve.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// One panel.
pub struct Panel {
    /// Title drawn above the panel.
    pub title: String,
    /// y range; `None` = from the data.
    pub y_range: Option<(f64, f64)>,
    /// Curves.
    pub series: Vec<Series>,
}

const PANEL_W: usize = 480;
const H: usize = 360;
const M_LEFT: usize = 52;
const M_RIGHT: usize = 14;
const M_TOP: usize = 28;
const M_BOTTOM: usize = 36;
const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![255; w * h * 3] }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line from (x0, y0) to (x1, y1), `thick` pixels wide (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for ox in 0..thick {
                for oy in 0..thick {
                    self.set(x + ox - thick / 2, y + oy - thick / 2, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY[(ch as usize).min(127)];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.set(x + k as i64 * 8 + col, y + row as i64, c);
                    }
                }
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| Error::file(path, e))?;
        w.write_image_data(&self.px).map_err(|e| Error::file(path, e))
    }
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_panel(c: &mut Canvas, x0: usize, p: &Panel) {
    let pts = || p.series.iter().flat_map(|s| finite(&s.points));
    let (xlo, xhi) = widen(pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| (lo.min(x), hi.max(x))));
    let (ylo, yhi) =
        widen(p.y_range.unwrap_or_else(|| {
            pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, y)| (lo.min(y), hi.max(y)))
        }));
    let (left, right) = ((x0 + M_LEFT) as i64, (x0 + PANEL_W - M_RIGHT) as i64);
    let (top, bottom) = (M_TOP as i64, (H - M_BOTTOM) as i64);
    let sx = |x: f64| left + ((x - xlo) / (xhi - xlo) * (right - left) as f64).round() as i64;
    let sy = |y: f64| bottom - ((y - ylo) / (yhi - ylo) * (bottom - top) as f64).round() as i64;
    let (black, grey) = ([0, 0, 0], [225, 225, 225]);
    for k in 0..=4 {
        let y = ylo + (yhi - ylo) * k as f64 / 4.0;
        c.line((left, sy(y)), (right, sy(y)), grey, 1);
        let l = label(y);
        c.text(left - 6 - 8 * l.len() as i64, sy(y) - 4, &l, black);
        let x = xlo + (xhi - xlo) * k as f64 / 4.0;
        let l = label(x);
        c.text(sx(x) - 4 * l.len() as i64, bottom + 8, &l, black);
    }
    c.line((left, top), (left, bottom), black, 1);
    c.line((left, bottom), (right, bottom), black, 1);
    c.text(left, 8, &p.title, black);
    c.text((left + right) / 2 - 36, bottom + 22, "iteration", black);
    for (i, s) in p.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let xy: Vec<(i64, i64)> = finite(&s.points).map(|(x, y)| (sx(x), sy(y))).collect();
        for w in xy.windows(2) {
            c.line(w[0], w[1], color, 2);
        }
        for &(x, y) in &xy {
            c.line((x - 2, y), (x + 2, y), color, 2);
        }
        let ly = top + 6 + 12 * i as i64;
        c.line((left + 10, ly + 4), (left + 26, ly + 4), color, 2);
        c.text(left + 30, ly, &s.label, black);
    }
}

/// Draws `panels` side by side into a PNG at `path`.
pub fn save_png(panels: &[Panel], path: &Path) -> Result<()> {
    let mut c = Canvas::new(PANEL_W * panels.len().max(1), H);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(&mut c, i * PANEL_W, p);
    }
    c.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_even_from_degenerate_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.png");
        let panels = [
            Panel {
                title: "success".into(),
                y_range: Some((0.0, 1.0)),
                series: vec![
                    Series { label: "a".into(), points: vec![(0.0, 0.1), (1.0, 0.5), (2.0, f64::NAN), (3.0, 0.9)] },
                    Series { label: "b".into(), points: vec![] },
                ],
            },
            Panel {
                title: "one point".into(),
                y_range: None,
                series: vec![Series { label: "c".into(), points: vec![(1.0, 2.0)] }],
            },
        ];
        save_png(&panels, &f).unwrap();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let dec = png::Decoder::new(std::fs::File::open(&f).unwrap());
        let reader = dec.read_info().unwrap();
        assert_eq!(reader.info().width as usize, 2 * PANEL_W);
    }
}
