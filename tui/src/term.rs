//! Running the explorer in a real terminal: raw mode and the alternate
//! screen (restored on every way out, panics included, via [`restore`]),
//! and one loop that waits for a key, a relay event, a finished layout or
//! the reconnect countdown, and redraws only then. Idle means no work.

use std::io::{self, Stdout};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, terminal};
use futures::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::actions;
use crate::app::{App, Effect};
use crate::live::{self, ConnState};
use crate::ui;

/// Maps smaller than this are laid out on the spot; bigger ones on a
/// blocking thread, so keys stay responsive.
const INLINE_LAYOUT_NODES: usize = 200;
/// Redraws at most this often while events stream in.
const FRAME_EVERY: Duration = Duration::from_millis(50);
/// Events folded in before a redraw, at most.
const EVENT_BURST: usize = 4096;

/// Whether the explorer has the terminal (so [`restore`] has work to do).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back: main screen, cooked mode, visible cursor. Does
/// nothing unless the explorer changed it, so it is safe in a panic hook of
/// any command, and safe to call twice.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// The terminal in raw mode on the alternate screen until dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn open() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut stdout = io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the explorer against the relay at `url` until the user quits.
pub async fn run(mut app: App, url: String) -> io::Result<()> {
    let (handle, mut events) = live::spawn(url.clone(), app.subscription());
    let mut screen = Screen::open()?;
    let mut keys = EventStream::new();
    let (layout_tx, mut layouts) = mpsc::channel(4);
    let (why_tx, mut whys) = mpsc::channel(2);
    let mut computing: Option<u64> = None;
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME_EVERY;

    loop {
        if dirty && last_draw.elapsed() >= FRAME_EVERY {
            if let Some(job) = app.prepare() {
                if job.nodes.len() <= INLINE_LAYOUT_NODES {
                    let layout = job.run();
                    app.finish_layout(job.shape, layout);
                } else if computing != Some(job.shape) {
                    computing = Some(job.shape);
                    let tx = layout_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let layout = job.run();
                        let _ = tx.blocking_send((job.shape, layout));
                    });
                }
            }
            screen.terminal.draw(|frame| ui::draw(frame, &mut app))?;
            dirty = false;
            last_draw = Instant::now();
        }
        // A pending redraw waits out the frame interval; the reconnect
        // countdown in the header ticks once a second.
        let wake = if dirty {
            Some(last_draw + FRAME_EVERY)
        } else if matches!(app.conn, ConnState::Reconnecting { .. }) {
            Some(Instant::now() + Duration::from_secs(1))
        } else {
            None
        };
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                app.apply(event);
                let mut more = 0;
                while more < EVENT_BURST {
                    match events.try_recv() {
                        Ok(event) => app.apply(event),
                        Err(_) => break,
                    }
                    more += 1;
                }
                dirty = true;
            }
            key = keys.next() => {
                match key {
                    Some(Ok(TermEvent::Key(key))) => match app.handle_key(key) {
                        Effect::Quit => break,
                        Effect::Resubscribe(sub) => handle.resubscribe(sub),
                        Effect::Explain(flow) => {
                            let (tx, url) = (why_tx.clone(), url.clone());
                            tokio::spawn(async move {
                                let _ = tx.send((None, actions::explain(&url, *flow).await)).await;
                            });
                        }
                        Effect::ExplainNewest(filter) => {
                            let (tx, url) = (why_tx.clone(), url.clone());
                            tokio::spawn(async move {
                                let _ = tx.send(actions::explain_newest(&url, *filter).await).await;
                            });
                        }
                        Effect::Copy(text) => {
                            match actions::copy(screen.terminal.backend_mut(), &text) {
                                Ok(()) => app.flash(format!(
                                    "copied {} lines (OSC 52: the terminal must allow it; in tmux, set-clipboard on)",
                                    text.lines().count()
                                )),
                                Err(e) => app.flash_error(format!("cannot copy: {e}")),
                            }
                        }
                        Effect::Save { file_name, text } => {
                            match actions::save_new(Path::new("."), &file_name, &text) {
                                Ok(path) => app.flash(format!(
                                    "wrote {0}: kubectl apply -f {0}",
                                    path.display()
                                )),
                                Err(e) => app.flash_error(format!("cannot save {file_name}: {e}")),
                            }
                        }
                        Effect::None => {}
                    },
                    Some(Ok(TermEvent::Resize(..))) => {
                        screen.terminal.autoresize()?;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
                dirty = true;
                // Keys answer at once, not after the frame interval.
                last_draw = Instant::now() - FRAME_EVERY;
            }
            Some((flow, answer)) = whys.recv() => {
                if let Some(flow) = &flow {
                    app.explaining(flow);
                }
                app.explained(answer);
                dirty = true;
            }
            Some((shape, layout)) = layouts.recv() => {
                computing = None;
                app.finish_layout(shape, layout);
                dirty = true;
            }
            _ = sleep_until(wake) => {
                dirty = true;
            }
        }
    }
    drop(screen);
    handle.shutdown();
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
