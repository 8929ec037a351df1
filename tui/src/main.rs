//! `addond-tui`: wires the terminal, the input thread, the network tasks and the state.

use std::io::{stdout, IsTerminal, Stdout};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use addond::client::{discover_socket, Client};
use addond_tui::app::{App, Event, Options};
use addond_tui::net::Net;
use addond_tui::ui;
use clap::Parser;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;
use tokio::sync::mpsc;

/// At most this often the screen is redrawn (~30 frames per second).
const FRAME: Duration = Duration::from_millis(33);
/// Redraw at least this often when nothing happens (clocks, countdowns).
const TICK: Duration = Duration::from_secs(1);

/// Live terminal dashboard for addond: services, health, metrics, logs, ports and events,
/// with start/stop/restart/scale/delete/create at a key press. Press ? inside for the keys.
#[derive(Parser, Debug)]
#[command(name = "addond-tui", version)]
struct Args {
    /// The daemon's admin socket. Default: $ADDOND_SOCKET, else ./.addond/addond.sock when it
    /// exists (a dev daemon), else /run/addond/addond.sock.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The daemon's port range for the port map, e.g. 8000-9000 (default: worked out from
    /// what the daemon reports).
    #[arg(long, value_name = "START-END", value_parser = parse_range)]
    ports: Option<(u16, u16)>,
    /// Leave the mouse to the terminal (text selection) instead of using clicks and the wheel.
    #[arg(long)]
    no_mouse: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Write the man page (addond-tui.1) into DIR (for packaging).
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

/// The sections of addond-tui(1) clap does not know: the keys (from the table the `?`
/// overlay shows), files, environment, exit status, signals.
fn page_extras() -> addond::cli_docs::PageExtras {
    use addond::cli_docs::PageExtras;
    let keys =
        ui::key_table().map(|(k, what)| if k.is_empty() { (String::new(), format!("{what}:")) } else { (k.to_string(), what.to_string()) });
    PageExtras {
        sections: vec![("KEYS".to_string(), keys.collect())],
        files: PageExtras::pairs(&[
            ("/run/addond/addond.sock", "the admin socket of the system daemon (group addond may use it)"),
            ("./.addond/addond.sock", "the socket of a development daemon (addond --dev) in this directory, used when it exists"),
        ]),
        environment: PageExtras::pairs(&[
            ("ADDOND_SOCKET", "the daemon's admin socket, unless --socket is given"),
            ("NO_COLOR", "when set and not empty: no colours (selection and states shown by reverse video and text)"),
        ]),
        exit_status: PageExtras::pairs(&[
            ("0", "quit with q or Ctrl-C"),
            ("1", "the terminal could not be set up or drawn on"),
            ("2", "usage error, or standard output is not a terminal (use addonctl in scripts)"),
            ("101", "an internal error (a panic); the terminal is restored first"),
        ]),
        signals: PageExtras::pairs(&[
            ("SIGWINCH", "redraw at the new size (columns are dropped by priority when narrow)"),
            ("SIGINT", "in raw mode Ctrl-C is a key, and quits like q"),
            ("SIGTERM, SIGHUP", "end the program; the terminal may need `reset`"),
        ]),
        see_also: ["addond(8)", "addonctl(1)", "addond.toml(5)"].map(String::from).to_vec(),
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once(['-', ':']).ok_or("expected START-END, e.g. 8000-9000")?;
    let a: u16 = a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{a}-{b} is not a range of ports"));
    }
    Ok((a, b))
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen, cursor::Show);
}

/// Puts the terminal back however the program ends: normal return, error, or panic.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::GenerateMan { dir }) = &args.command {
        use clap::CommandFactory;
        return match addond::cli_docs::generate_man(Args::command(), dir, "1", &page_extras()) {
            Ok(pages) => {
                for p in pages {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("addond-tui: cannot write the man page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !stdout().is_terminal() {
        eprintln!("addond-tui: standard output is not a terminal; use addonctl for scripts");
        return ExitCode::from(2);
    }
    let socket = discover_socket(args.socket.clone());
    // Any panic, on any thread: restore the terminal, print the panic, and end the process
    // (a dashboard with a dead task inside would only mislead).
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
        std::process::exit(101);
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("addond-tui: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args, socket));
    rt.shutdown_timeout(Duration::from_millis(300));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("addond-tui: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, socket: PathBuf) -> std::io::Result<()> {
    enable_raw_mode()?;
    let _guard = TerminalGuard;
    execute!(stdout(), EnterAlternateScreen)?;
    if !args.no_mouse {
        execute!(stdout(), EnableMouseCapture)?;
    }
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.clear()?;

    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    let stop = Arc::new(AtomicBool::new(false));
    spawn_input(tx.clone(), stop.clone())?;

    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Test hook (tui/tests/e2e.rs): panic on a runtime thread after this many milliseconds,
    // to check that the terminal is restored whatever thread panics.
    if let Some(ms) = std::env::var("ADDOND_TUI_TEST_PANIC_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            panic!("test panic requested by ADDOND_TUI_TEST_PANIC_MS");
        });
    }
    let mut app = App::new(Options { socket: socket.display().to_string(), color, ports: args.ports });
    let size = terminal.size()?;
    let mut net = Net::start(Client::new(socket), tx);
    for c in app.handle(Event::Resize(size.width, size.height)) {
        net.dispatch(c);
    }

    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    while !app.quit {
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            terminal.draw(|f| ui::draw(&app, f))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        let wait = match (dirty, last_draw) {
            (true, Some(t)) => FRAME.saturating_sub(t.elapsed()),
            _ => TICK,
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(ev)) => {
                dirty = true;
                for c in app.handle(ev) {
                    net.dispatch(c);
                }
                // Take what else is queued before drawing, but not without limit, so a
                // flood of log lines cannot hold the screen still.
                for _ in 0..1024 {
                    let Ok(ev) = rx.try_recv() else { break };
                    for c in app.handle(ev) {
                        net.dispatch(c);
                    }
                }
            }
            Ok(None) => break,
            Err(_) if !dirty => {
                for c in app.handle(Event::Tick) {
                    net.dispatch(c);
                }
                dirty = true;
            }
            Err(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(net);
    Ok(())
}

/// Reads the terminal on its own thread (crossterm's reads block) and forwards what matters.
fn spawn_input(tx: mpsc::Sender<Event>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(200)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                let ev = match event::read() {
                    Ok(event::Event::Key(k)) => Event::Key(k),
                    Ok(event::Event::Mouse(m)) => Event::Mouse(m),
                    Ok(event::Event::Resize(w, h)) => Event::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.blocking_send(ev).is_err() {
                    break;
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page lists every key of the `?` overlay, under the overlay's groups.
    #[test]
    fn man_page_lists_every_key() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let pages = addond::cli_docs::generate_man(Args::command(), dir.path(), "1", &page_extras()).unwrap();
        assert_eq!(pages, [dir.path().join("addond-tui.1")], "one page (the hidden generate-man has none)");
        let page = std::fs::read_to_string(&pages[0]).unwrap();
        let keys = page.split(".SH \"KEYS\"").nth(1).and_then(|s| s.split(".SH ").next()).expect("a KEYS section").to_string();
        let plain = keys.replace("\\-", "-").replace("\\[u2191]", "↑").replace("\\[u2193]", "↓");
        let mut n = 0;
        for (k, what) in ui::key_table() {
            if k.is_empty() {
                assert!(plain.contains(&format!("{what}:")), "group {what} missing:\n{plain}");
            } else {
                assert!(plain.contains(&format!("\\fB{k}\\fR\n{what}\n")), "{k} ({what}) missing:\n{plain}");
                n += 1;
            }
        }
        assert!(n >= 20, "{n} keys");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("8000-9000"), Ok((8000, 9000)));
        assert_eq!(parse_range("8700:8750"), Ok((8700, 8750)));
        assert!(parse_range("9000-8000").is_err());
        assert!(parse_range("x-1").is_err());
        assert!(parse_range("8000").is_err());
    }
}
