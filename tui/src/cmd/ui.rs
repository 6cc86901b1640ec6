//! `skymap` / `skymap ui`: the explorer against a relay; `skymap demo`: the
//! explorer against a relay started in this process, fed the shipped
//! recording in a loop.

use std::io::{BufRead, Cursor, IsTerminal};
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr, eyre};
use skymap_proto::jsonl::FlowReader;
use skymap_relay::server::{self, RelayConfig};
use skymap_themes::{ColorDepth, detect_depth};
use skymap_tui::app::{App, Options};
use skymap_tui::map::Glyphs;
use skymap_tui::offline::{DEMO_RECORDING, demo_metadata};
use skymap_tui::term;

use super::replay::{Feed, Progress, feed};
use crate::{ColorWhen, DemoArgs, LookArgs, UiArgs, conn};

/// Flows the explorer keeps for its flows, drops and DNS views.
const FLOW_CAPACITY: usize = 10_000;

pub async fn run(args: UiArgs) -> Result<ExitCode> {
    let url = conn::normalize(&args.relay)?;
    let app = App::new(options(&args.look, url.clone())?);
    ensure_terminal()?;
    term::run(app, url).await.wrap_err("terminal")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(eyre!("--speed must be a positive number"));
    }
    let options_ = options(&args.look, String::new())?;
    ensure_terminal()?;
    // A small history: the demo's whole loop is a few thousand flows.
    let mut config = RelayConfig::default();
    config.engine.history_capacity = 100_000;
    // The shipped scenario always builds; without it `w` only explains reasons.
    config.metadata = demo_metadata().ok().map(std::sync::Arc::new);
    let relay = server::start("127.0.0.1:0", config)
        .await
        .wrap_err("cannot start the demo relay")?;
    let url = format!("http://{}", relay.addr);
    let client = conn::ingest(&url).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let feeding = tokio::spawn(feed(
        client,
        demo_reader(),
        || Ok(demo_reader()),
        Feed {
            speed: args.speed,
            repeat: true,
            keep_time: false,
            batch: 500,
            progress: Progress::quiet(),
        },
        async move {
            let _ = stop_rx.await;
        },
    ));

    let app = App::new(Options {
        source: format!("{url} (demo)"),
        ..options_
    });
    let outcome = term::run(app, url).await;
    let _ = stop_tx.send(());
    let fed = feeding.await;
    let _ = relay.shutdown().await;
    outcome.wrap_err("terminal")?;
    match fed {
        Ok(Ok(_)) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(e.wrap_err("replaying the demo recording")),
        Err(e) => Err(eyre!("the demo feed failed: {e}")),
    }
}

fn demo_reader() -> FlowReader<Box<dyn BufRead + Send>> {
    FlowReader::new(
        Box::new(Cursor::new(DEMO_RECORDING.as_bytes())),
        "demo recording",
    )
}

/// The explorer needs a terminal on both ends; say so instead of drawing
/// escape codes into a pipe.
fn ensure_terminal() -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(eyre!(
            "the explorer needs a terminal; for scripts use `skymap snapshot`, `skymap observe` or `skymap graph`"
        ));
    }
    Ok(())
}

/// Glyphs, colours and theme from the flags and the environment.
pub fn options(look: &LookArgs, source: String) -> Result<Options> {
    let env = |name: &str| std::env::var(name).ok();
    let theme = skymap_themes::load(look.theme.as_deref(), &env)?;
    let depth = match look.color {
        ColorWhen::Never => ColorDepth::None,
        ColorWhen::Auto => detect_depth(&env),
        ColorWhen::Always => detect_depth(&|name: &str| {
            if name == "NO_COLOR" { None } else { env(name) }
        })
        .max(ColorDepth::Ansi16),
    };
    let glyphs = if look.ascii || (!look.unicode && !utf8_locale(&env)) {
        Glyphs::Ascii
    } else {
        Glyphs::Unicode
    };
    Ok(Options {
        source,
        glyphs,
        theme,
        depth,
        flow_capacity: FLOW_CAPACITY,
    })
}

/// Whether the locale's character set is UTF-8: the first of LC_ALL,
/// LC_CTYPE and LANG that is set decides, as in C's setlocale.
pub fn utf8_locale(env: &impl Fn(&str) -> Option<String>) -> bool {
    let locale = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()));
    locale.is_some_and(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("utf-8") || l.contains("utf8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_decides_glyphs() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(utf8_locale(&env(&[("LANG", "en_US.UTF-8")])));
        assert!(utf8_locale(&env(&[("LANG", "C.utf8")])));
        assert!(!utf8_locale(&env(&[("LANG", "C")])));
        assert!(!utf8_locale(&env(&[])));
        // LC_ALL overrides LANG.
        assert!(!utf8_locale(&env(&[
            ("LC_ALL", "POSIX"),
            ("LANG", "en_US.UTF-8")
        ])));
        assert!(utf8_locale(&env(&[
            ("LC_CTYPE", "de_DE.UTF-8"),
            ("LANG", "C")
        ])));
    }
}
