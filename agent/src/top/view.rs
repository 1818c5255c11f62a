//! Drawing the `gapless top` screen with ratatui: a header line (agent, health, WAL, drops,
//! keys), the sinks table, the selected sink's delivery rate as a sparkline with its last
//! error and reasons, and the sources table. Fits an 80×24 terminal.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use super::model::Model;
use crate::ops::{age, bytes};

/// Draws `model` with sink `selected` highlighted; `note` is a line about the connection.
pub fn draw(frame: &mut Frame<'_>, model: &Model, selected: usize, note: &str) {
    let area = frame.area();
    let sink_rows = model.sinks.len().clamp(1, 8) as u16 + 3;
    let source_rows = model.sources.len().clamp(1, 6) as u16 + 3;
    let [header, sinks, detail, sources, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(sink_rows),
        Constraint::Min(6),
        Constraint::Length(source_rows),
        Constraint::Length(1),
    ])
    .areas(area);

    let health = if model.healthy {
        Span::styled("delivery HEALTHY", Style::default().fg(Color::Green))
    } else {
        Span::styled(
            "delivery UNHEALTHY",
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )
    };
    let (used, max) = model.wal;
    let wal = format!(
        "WAL {} of {} ({:.1}%)  dropped {}  disk-full errors {}",
        bytes(used),
        bytes(max),
        used as f64 * 100.0 / max.max(1) as f64,
        model.drops,
        model.disk_full
    );
    frame.render_widget(
        Paragraph::new(vec![
            // Health first: a narrow terminal cuts the agent's id, not the verdict.
            Line::from(vec![health, Span::raw(format!("  {}", model.agent))]),
            Line::from(wal),
        ]),
        header,
    );

    let rows = model.sinks.iter().enumerate().map(|(i, s)| {
        let style = match (i == selected, s.unhealthy) {
            (true, _) => Style::default().add_modifier(Modifier::REVERSED),
            (false, true) => Style::default().fg(Color::Red),
            _ => Style::default(),
        };
        Row::new(vec![
            Cell::from(s.name.clone()),
            Cell::from(s.health.clone()),
            Cell::from(format!("{} ({})", s.backlog, bytes(s.backlog_bytes))),
            Cell::from(age(s.oldest_age)),
            Cell::from(format!("{:.0}/s", s.rate)),
            Cell::from(s.dead_lettered.to_string()),
        ])
        .style(style)
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(14),
                Constraint::Length(12),
                Constraint::Length(20),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(["sink", "health", "backlog", "oldest", "rate", "dead-l."])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::TOP).title(" sinks ")),
        sinks,
    );

    if let Some(s) = model.sinks.get(selected) {
        let [spark, text] =
            Layout::vertical([Constraint::Length(4), Constraint::Min(1)]).areas(detail);
        let width = spark.width.saturating_sub(2) as usize;
        let points: Vec<u64> = s.history.iter().rev().take(width).rev().copied().collect();
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::TOP).title(format!(
                    " {}: delivered events/s, last {} s (peak {}) ",
                    s.name,
                    points.len(),
                    points.iter().max().copied().unwrap_or(0)
                )))
                .data(&points)
                .style(Style::default().fg(Color::Cyan)),
            spark,
        );
        let mut lines = Vec::new();
        if let Some(e) = &s.last_error {
            lines.push(Line::from(format!("last error: {e}")));
        }
        for r in &s.reasons {
            lines.push(Line::styled(
                format!("unhealthy: {r}"),
                Style::default().fg(Color::Red),
            ));
        }
        if lines.is_empty() {
            lines.push(Line::from("no error since the last delivery"));
        }
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    }

    let rows = model.sources.iter().map(|s| {
        Row::new(vec![
            s.name.clone(),
            format!("{:.0}/s", s.rate),
            s.events.to_string(),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(14),
                Constraint::Length(12),
                Constraint::Length(16),
            ],
        )
        .header(
            Row::new(["source", "events", "total"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::TOP).title(" sources ")),
        sources,
    );
    frame.render_widget(
        Paragraph::new(format!("q quit · tab/↓ next sink · ↑ previous  {note}")),
        footer,
    );
}
