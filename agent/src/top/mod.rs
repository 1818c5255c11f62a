//! `gapless top`: a live full-screen view of a running agent, fed by its `/status` once a
//! second ([`model`]), drawn with ratatui ([`view`]). `q`, `Esc` or `Ctrl-C` quit; `Tab`,
//! `↓`/`j` and `↑`/`k` choose the sink whose rate history and errors are shown. An agent that
//! stops answering for three seconds ends it with a message and exit status 1.

mod model;
mod view;

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::error::{Error, Result};

/// How long the agent may not answer before `top` gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);

/// Runs the view against the agent API at `api` until the user quits (`Ok`) or the agent
/// stops answering (`Err`).
pub fn run(api: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", "top", e))?;
    let client = reqwest::Client::new();
    let fetch = |client: &reqwest::Client| {
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_millis(900),
                crate::ops::get_status(client, api),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "GET",
                    format!("http://{api}/status"),
                    std::io::Error::other("no answer within 900 ms"),
                ))
            })
        })
    };
    // Fail before taking the terminal over when the agent is not there at all.
    let first = fetch(&client)?;
    let mut model = model::Model::default();
    model.update(&first, Instant::now());
    let mut terminal = ratatui::init();
    let result = (|| {
        let mut selected = 0usize;
        let mut last_ok = Instant::now();
        let mut note = String::new();
        let mut next_poll = Instant::now() + Duration::from_secs(1);
        loop {
            terminal
                .draw(|f| view::draw(f, &model, selected, &note))
                .map_err(|e| Error::io("draw", "terminal", e))?;
            let wait = next_poll.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| Error::io("read", "terminal", e))? {
                if let Event::Key(k) =
                    event::read().map_err(|e| Error::io("read", "terminal", e))?
                {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    let n = model.sinks.len().max(1);
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(())
                        }
                        KeyCode::Tab | KeyCode::Down | KeyCode::Char('j') => {
                            selected = (selected + 1) % n
                        }
                        KeyCode::BackTab | KeyCode::Up | KeyCode::Char('k') => {
                            selected = (selected + n - 1) % n
                        }
                        _ => {}
                    }
                }
                continue;
            }
            next_poll = Instant::now() + Duration::from_secs(1);
            match fetch(&client) {
                Ok(status) => {
                    model.update(&status, Instant::now());
                    selected = selected.min(model.sinks.len().saturating_sub(1));
                    last_ok = Instant::now();
                    note.clear();
                }
                Err(e) if last_ok.elapsed() >= GIVE_UP_AFTER => return Err(e),
                Err(_) => {
                    note = format!("no answer for {} s", last_ok.elapsed().as_secs());
                }
            }
        }
    })();
    ratatui::restore();
    result
}
