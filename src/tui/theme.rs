//! Colours of the live view: a dark and a light theme, and a colourless one for `NO_COLOR`
//! (<https://no-color.org>) that marks the same states with bold, dim and reverse video.

use ratatui::style::{Color, Modifier, Style};

/// `--theme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThemeName {
    Dark,
    Light,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Theme {
    /// syntect theme for revealed code.
    pub syntax: &'static str,
    /// Uncoloured text.
    pub text: Style,
    /// A masked position in the block being denoised.
    pub mask_active: Style,
    /// A masked position in a later block.
    pub mask_waiting: Style,
    /// A stop token (EOS/EOT/pad) on the canvas.
    pub stop: Style,
    /// Revealed this step, then the next steps, fading: index = age in steps.
    pub fresh: [Style; 3],
    /// Rewritten by token editing in the last few steps.
    pub edited: Style,
    pub user: Style,
    pub accent: Style,
    pub dim: Style,
    pub error: Style,
    pub gauge: Style,
    /// Colours are on (false under NO_COLOR): code gets syntax colours only then.
    pub colour: bool,
}

/// The glyph of a masked position.
pub const MASK_GLYPH: char = '░';
/// The glyph of a stop token still on the canvas.
pub const STOP_GLYPH: char = '·';

impl Theme {
    pub fn new(name: ThemeName, no_color: bool) -> Theme {
        if no_color {
            return Theme {
                syntax: "base16-ocean.dark",
                text: Style::new(),
                mask_active: Style::new(),
                mask_waiting: Style::new().add_modifier(Modifier::DIM),
                stop: Style::new().add_modifier(Modifier::DIM),
                fresh: [
                    Style::new().add_modifier(Modifier::REVERSED),
                    Style::new().add_modifier(Modifier::BOLD),
                    Style::new().add_modifier(Modifier::BOLD),
                ],
                edited: Style::new().add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
                user: Style::new().add_modifier(Modifier::BOLD),
                accent: Style::new().add_modifier(Modifier::BOLD),
                dim: Style::new().add_modifier(Modifier::DIM),
                error: Style::new().add_modifier(Modifier::BOLD),
                gauge: Style::new(),
                colour: false,
            };
        }
        match name {
            ThemeName::Dark => Theme {
                syntax: "base16-ocean.dark",
                text: Style::new().fg(Color::Rgb(0xc0, 0xc5, 0xce)),
                mask_active: Style::new().fg(Color::Rgb(0x8f, 0xa1, 0xb3)),
                mask_waiting: Style::new().fg(Color::Rgb(0x4f, 0x5b, 0x66)),
                stop: Style::new().fg(Color::Rgb(0x4f, 0x5b, 0x66)),
                fresh: [
                    Style::new()
                        .bg(Color::Rgb(0x8a, 0x6d, 0x1f))
                        .add_modifier(Modifier::BOLD),
                    Style::new().bg(Color::Rgb(0x5c, 0x4b, 0x1f)),
                    Style::new().bg(Color::Rgb(0x3b, 0x34, 0x22)),
                ],
                edited: Style::new()
                    .bg(Color::Rgb(0x6b, 0x2f, 0x5f))
                    .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                user: Style::new().fg(Color::Rgb(0x96, 0xb5, 0xb4)),
                accent: Style::new()
                    .fg(Color::Rgb(0xeb, 0xcb, 0x8b))
                    .add_modifier(Modifier::BOLD),
                dim: Style::new().fg(Color::Rgb(0x65, 0x73, 0x7e)),
                error: Style::new()
                    .fg(Color::Rgb(0xbf, 0x61, 0x6a))
                    .add_modifier(Modifier::BOLD),
                gauge: Style::new().fg(Color::Rgb(0xeb, 0xcb, 0x8b)),
                colour: true,
            },
            ThemeName::Light => Theme {
                syntax: "InspiredGitHub",
                text: Style::new().fg(Color::Rgb(0x32, 0x32, 0x32)),
                mask_active: Style::new().fg(Color::Rgb(0x6a, 0x73, 0x7d)),
                mask_waiting: Style::new().fg(Color::Rgb(0xb0, 0xb7, 0xbf)),
                stop: Style::new().fg(Color::Rgb(0xb0, 0xb7, 0xbf)),
                fresh: [
                    Style::new()
                        .bg(Color::Rgb(0xff, 0xd3, 0x3d))
                        .add_modifier(Modifier::BOLD),
                    Style::new().bg(Color::Rgb(0xff, 0xe5, 0x8f)),
                    Style::new().bg(Color::Rgb(0xff, 0xf5, 0xd1)),
                ],
                edited: Style::new()
                    .bg(Color::Rgb(0xf0, 0xc0, 0xf0))
                    .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                user: Style::new().fg(Color::Rgb(0x00, 0x5c, 0xc5)),
                accent: Style::new()
                    .fg(Color::Rgb(0x8a, 0x46, 0x00))
                    .add_modifier(Modifier::BOLD),
                dim: Style::new().fg(Color::Rgb(0x6a, 0x73, 0x7d)),
                error: Style::new()
                    .fg(Color::Rgb(0xcb, 0x24, 0x31))
                    .add_modifier(Modifier::BOLD),
                gauge: Style::new().fg(Color::Rgb(0x8a, 0x46, 0x00)),
                colour: true,
            },
        }
    }
}
