//! `?`: every key and command, over the current screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use skymap_themes::Role;

use crate::app::{App, HELP, Pane};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let width = area.width.saturating_sub(4).min(100);
    let height = area.height.saturating_sub(2).min(HELP.len() as u16 + 4);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let key_width = HELP
        .iter()
        .map(|k| k.keys.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|k| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<key_width$}", k.keys),
                    app.styles.get(Role::KeyHint),
                ),
                Span::styled(k.action, app.styles.get(Role::Text)),
            ])
        })
        .collect();
    lines.push(Line::from(Span::styled(
        " any other key closes this; j/k scroll",
        app.styles.get(Role::Muted),
    )));
    let block = super::pane_block(app, Pane::Main, "keys".to_string());
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .scroll((app.help_scroll, 0)),
        popup,
    );
}
