//! `w`: the explanation of a dropped flow, over the current screen: the
//! relay's answer, then the suggested policy with the keys that copy or save
//! it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use skymap_proto::names::sanitize;
use skymap_themes::Role;

use crate::app::{Answer, App, Pane, Why};
use crate::map::Glyphs;

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, why: &Why) {
    let width = area.width.saturating_sub(4).min(110);
    let height = area.height.saturating_sub(2);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let style = |role| app.styles.get(role);
    let text = |s: &str| {
        let clean = sanitize(s).into_owned();
        if app.glyphs == Glyphs::Ascii {
            clean.replace('→', "->")
        } else {
            clean
        }
    };
    let mut lines = vec![
        Line::from(Span::styled(text(&why.title), style(Role::Dropped))),
        Line::default(),
    ];
    let mut has_policy = false;
    match &why.answer {
        Answer::Waiting => lines.push(Line::from(Span::styled(
            "asking the relay...",
            style(Role::Muted),
        ))),
        Answer::Failed(e) => lines.push(Line::from(Span::styled(text(e), style(Role::Error)))),
        Answer::Ready(explanation) => {
            lines.push(Line::from(Span::styled(
                text(&explanation.summary),
                style(Role::Text),
            )));
            for detail in &explanation.details {
                lines.push(Line::from(Span::styled(
                    format!("  {}", text(detail)),
                    style(Role::Muted),
                )));
            }
            if !explanation.suggested_policy_yaml.is_empty() {
                has_policy = true;
                lines.push(Line::default());
                lines.push(Line::from(Span::styled(
                    "To allow it, apply this NetworkPolicy (c copies it, s saves it):",
                    style(Role::KeyHint),
                )));
                lines.extend(explanation.suggested_policy_yaml.lines().map(|l| {
                    Line::from(Span::styled(format!("  {}", text(l)), style(Role::Text)))
                }));
            }
        }
    }
    lines.push(Line::default());
    let keys = if has_policy {
        "c copy  s save  j/k scroll  esc close"
    } else {
        "j/k scroll  esc close"
    };
    lines.push(Line::from(Span::styled(keys, style(Role::Muted))));
    let block = super::pane_block(app, Pane::Main, "why was it dropped?".to_string());
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((why.scroll, 0)),
        popup,
    );
}
