//! Drawn covers: every product without an uploaded cover gets one drawn from its title and
//! creators, in one style per kind (a book's jacket, a record sleeve, a film poster). A
//! drawn cover is an SVG the shop shows as it is, at any size, so it needs no job.

use std::fmt::Write;

/// Background and accent pairs; a product's title picks one.
const PALETTES: [(&str, &str); 8] = [
    ("#264653", "#e9c46a"),
    ("#1d3557", "#e63946"),
    ("#3d405b", "#f2cc8f"),
    ("#2b2d42", "#8d99ae"),
    ("#283618", "#dda15e"),
    ("#5f0f40", "#fb8b24"),
    ("#023047", "#8ecae6"),
    ("#3c096c", "#ff9e00"),
];

/// The cover of a product of `kind` (book, music or video) as an SVG document.
pub fn draw(kind: &str, title: &str, creators: &[String]) -> String {
    let seed = title.bytes().fold(2_166_136_261_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(16_777_619)
    });
    let (background, accent) = PALETTES[seed as usize % PALETTES.len()];
    let creators = creators.join(", ");
    let (width, height) = match kind {
        "music" => (600, 600),
        _ => (400, 600),
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>{}</title><rect width="{width}" height="{height}" fill="{background}"/>"##,
        escape(title)
    );
    let title_top = match kind {
        "music" => {
            // A record half out of its sleeve.
            let _ = write!(
                svg,
                r##"<circle cx="420" cy="230" r="170" fill="#111"/><circle cx="420" cy="230" r="120" fill="none" stroke="#333" stroke-width="2"/><circle cx="420" cy="230" r="80" fill="none" stroke="#333" stroke-width="2"/><circle cx="420" cy="230" r="45" fill="{accent}"/><rect x="40" y="60" width="300" height="340" fill="{accent}" opacity="0.9"/>"##
            );
            430
        }
        "video" => {
            // Film strips above and below, a spotlight between.
            for y in [0, 560] {
                let _ = write!(
                    svg,
                    r##"<rect y="{y}" width="400" height="40" fill="#000"/>"##
                );
                for x in (10..400).step_by(30) {
                    let _ = write!(
                        svg,
                        r##"<rect x="{x}" y="{}" width="16" height="20" rx="3" fill="#ddd"/>"##,
                        y + 10
                    );
                }
            }
            let _ = write!(
                svg,
                r##"<polygon points="200,60 60,380 340,380" fill="{accent}" opacity="0.35"/><circle cx="200" cy="90" r="26" fill="{accent}"/>"##
            );
            400
        }
        _ => {
            // A book jacket: a spine band and a rule under the title.
            let _ = write!(
                svg,
                r##"<rect width="28" height="600" fill="{accent}"/><rect x="60" y="300" width="280" height="4" fill="{accent}"/>"##
            );
            120
        }
    };
    let family = if kind == "book" {
        "DejaVu Serif, Georgia, serif"
    } else {
        "DejaVu Sans, Helvetica, sans-serif"
    };
    let size = if kind == "music" { 40 } else { 36 };
    let x = if kind == "book" { 60 } else { 40 };
    for (index, line) in wrap(title, if kind == "music" { 24 } else { 16 })
        .iter()
        .enumerate()
    {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{}" font-family="{family}" font-size="{size}" font-weight="bold" fill="#fff">{}</text>"##,
            title_top + index * (size + 8),
            escape(line)
        );
    }
    let creators_y = if kind == "book" {
        350
    } else {
        height - 60 - if kind == "video" { 20 } else { 0 }
    };
    let _ = write!(
        svg,
        r##"<text x="{x}" y="{creators_y}" font-family="{family}" font-size="22" fill="{accent}">{}</text></svg>"##,
        escape(&shorten(&creators, 40))
    );
    svg
}

/// `text` in lines of about `width` characters, broken between words, at most four.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(shorten(word, width)),
        }
    }
    if lines.len() > 4 {
        lines.truncate(4);
        if let Some(last) = lines.last_mut() {
            last.push('…');
        }
    }
    lines
}

fn shorten(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(most - 1).collect();
    short.push('…');
    short
}

/// Text made safe inside an XML element.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c if c.is_control() => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cover_shows_the_title_and_creators_escaped() {
        let svg = draw(
            "book",
            "Tom & Jerry <3",
            &["A \"Quoted\" Author".to_owned()],
        );
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("Tom &amp; Jerry &lt;3"), "{svg}");
        assert!(svg.contains("A &quot;Quoted&quot; Author"), "{svg}");
        assert!(!svg.contains("<3"));
    }

    #[test]
    fn each_kind_has_its_own_style_and_long_titles_wrap() {
        let book = draw("book", "Dune", &[]);
        let music = draw("music", "Dune", &[]);
        let video = draw("video", "Dune", &[]);
        assert!(music.contains("width=\"600\" height=\"600\""));
        assert!(book.contains("serif") && !music.contains("Serif"));
        assert_ne!(book, video);
        let lines = wrap(
            "The Very Long Title Of A Book That Goes On And On Forever More",
            16,
        );
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|line| line.chars().count() <= 17));
    }
}
