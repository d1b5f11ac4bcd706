//! Syntax highlighting of revealed text with syntect, mapped to ratatui styles.
//!
//! Text outside fenced code blocks stays plain; a fence's language tag (```rust) picks the
//! grammar, and `--lang` forces one for the whole answer. Syntaxes and themes load once.

use std::sync::LazyLock;

use ratatui::style::{Color, Modifier, Style};
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, Theme, ThemeSet};
use syntect::parsing::{SyntaxReference, SyntaxSet};

static SYNTAXES: LazyLock<SyntaxSet> = LazyLock::new(SyntaxSet::load_defaults_newlines);
static THEMES: LazyLock<ThemeSet> = LazyLock::new(ThemeSet::load_defaults);

/// The grammar for a fence tag or `--lang` value (`rust`, `py`, `c++`, ...), if syntect has one.
pub fn syntax_for(tag: &str) -> Option<&'static SyntaxReference> {
    let tag = tag.trim().to_ascii_lowercase();
    let alias = match tag.as_str() {
        "c++" => "cpp",
        "shell" | "sh" | "zsh" => "bash",
        "js" | "jsx" | "ts" | "typescript" | "tsx" => "js",
        "golang" => "go",
        "py3" | "python3" => "py",
        "rs" => "rust",
        other => other,
    };
    SYNTAXES
        .find_syntax_by_token(alias)
        .or_else(|| SYNTAXES.find_syntax_by_extension(alias))
}

fn theme(name: &str) -> Option<&'static Theme> {
    THEMES
        .themes
        .get(name)
        .or_else(|| THEMES.themes.values().next())
}

/// The language tag of a fence line (```` ```rust ````), `Some("")` for a bare fence.
pub fn fence_tag(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("```")?;
    Some(rest.trim())
}

/// One style per `char` of `text`: code inside fences (or everything, with `forced`) coloured
/// by its grammar, the rest `plain`.
pub fn char_styles(
    text: &str,
    forced: Option<&'static SyntaxReference>,
    theme_name: &str,
    plain: Style,
) -> Vec<Style> {
    let mut styles = Vec::with_capacity(text.len());
    let Some(theme) = theme(theme_name) else {
        styles.resize(text.chars().count(), plain);
        return styles;
    };
    let mut block: Option<HighlightLines> = forced.map(|s| HighlightLines::new(s, theme));
    for line in text.split_inclusive('\n') {
        if let Some(tag) = fence_tag(line) {
            block = match (&block, forced) {
                (_, Some(syntax)) => Some(HighlightLines::new(syntax, theme)),
                (Some(_), None) => None,
                (None, None) => Some(HighlightLines::new(
                    syntax_for(tag).unwrap_or(SYNTAXES.find_syntax_plain_text()),
                    theme,
                )),
            };
            styles.extend(line.chars().map(|_| plain));
            continue;
        }
        match block
            .as_mut()
            .and_then(|h| h.highlight_line(line, &SYNTAXES).ok())
        {
            Some(ranges) => {
                for (style, piece) in ranges {
                    let s = to_ratatui(style);
                    styles.extend(piece.chars().map(|_| s));
                }
            }
            None => styles.extend(line.chars().map(|_| plain)),
        }
    }
    styles
}

fn to_ratatui(style: syntect::highlighting::Style) -> Style {
    let fg = style.foreground;
    let mut s = Style::new().fg(Color::Rgb(fg.r, fg.g, fg.b));
    if style.font_style.contains(FontStyle::BOLD) {
        s = s.add_modifier(Modifier::BOLD);
    }
    if style.font_style.contains(FontStyle::ITALIC) {
        s = s.add_modifier(Modifier::ITALIC);
    }
    s
}

/// `text` with ANSI 24-bit colours for a terminal, used for the answer a one-shot run leaves
/// in the scrollback.
pub fn ansi(text: &str, forced: Option<&'static SyntaxReference>, theme_name: &str) -> String {
    let styles = char_styles(text, forced, theme_name, Style::new());
    let mut out = String::with_capacity(text.len() * 2);
    let mut current: Option<Style> = None;
    for (c, s) in text.chars().zip(styles) {
        if c == '\n' {
            if current.take().is_some() {
                out.push_str("\x1b[0m");
            }
            out.push('\n');
            continue;
        }
        if current != Some(s) {
            out.push_str("\x1b[0m");
            if let Some(Color::Rgb(r, g, b)) = s.fg {
                out.push_str(&format!("\x1b[38;2;{r};{g};{b}m"));
            }
            if s.add_modifier.contains(Modifier::BOLD) {
                out.push_str("\x1b[1m");
            }
            current = Some(s);
        }
        out.push(c);
    }
    if current.is_some() {
        out.push_str("\x1b[0m");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_in_fences_is_coloured_and_prose_is_not() {
        let text = "Here:\n```rust\nfn main() {}\n```\ndone";
        let plain = Style::new();
        let styles = char_styles(text, None, "base16-ocean.dark", plain);
        assert_eq!(styles.len(), text.chars().count());
        let at = |needle: &str| {
            text.find(needle)
                .map(|b| text[..b].chars().count())
                .expect("needle")
        };
        assert_eq!(styles[at("Here")], plain);
        assert_ne!(styles[at("fn")], plain, "keyword coloured");
        assert_eq!(styles[at("done")], plain);
    }

    #[test]
    fn forced_language_colours_unfenced_code() {
        let text = "def f(x):\n    return x";
        let styles = char_styles(
            text,
            syntax_for("python"),
            "base16-ocean.dark",
            Style::new(),
        );
        assert_ne!(styles[0], Style::new());
        assert!(syntax_for("no-such-language").is_none());
        assert!(syntax_for("rs").is_some() && syntax_for("c++").is_some());
    }

    #[test]
    fn ansi_output_resets_at_each_newline() {
        let out = ansi("```rust\nlet x = 1;\n```", None, "base16-ocean.dark");
        assert!(out.contains("\x1b[38;2;"));
        assert!(
            out.lines()
                .all(|l| !l.contains('\x1b') || l.ends_with("\x1b[0m")),
            "{out:?}"
        );
    }
}
