//! Keys and the mouse: what each does in each view and mode. The methods here change the
//! [`App`] and queue [`Command`]s; like the rest of the state side they do no I/O. Page
//! sizes and hit tests come from [`layout`], the same geometry the drawing uses.

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

use super::layout;
use super::{stamp, valid_name, App, Avail, Command, Confirm, LogTarget, LogView, Mode, Op, PromptKind, SortKey, View};

impl App {
    fn select_row(&mut self, row: usize) {
        if let Some(&i) = self.rows.get(row) {
            self.selected = Some(self.services[i].id.clone());
            self.clamp_offsets();
        }
    }

    fn move_selection(&mut self, delta: isize) {
        if self.rows.is_empty() {
            return;
        }
        let cur = self.selected_row().unwrap_or(0) as isize;
        let row = (cur + delta).clamp(0, self.rows.len() as isize - 1) as usize;
        self.select_row(row);
    }

    // ---- keys -------------------------------------------------------------------------

    pub(super) fn key(&mut self, k: KeyEvent, cmds: &mut Vec<Command>) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            self.quit = true;
            return;
        }
        match self.mode.clone() {
            Mode::Help => {
                if matches!(k.code, KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter) {
                    self.mode = Mode::Normal;
                }
            }
            Mode::Filter => match k.code {
                KeyCode::Enter => self.mode = Mode::Normal,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.mode = Mode::Normal;
                    self.refresh_rows();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                    self.refresh_rows();
                }
                KeyCode::Char('u') if ctrl => {
                    self.filter.clear();
                    self.refresh_rows();
                }
                KeyCode::Char(c) if !ctrl && !c.is_control() => {
                    self.filter.push(c);
                    self.refresh_rows();
                }
                KeyCode::Down | KeyCode::Up => {
                    self.mode = Mode::Normal;
                    self.move_selection(if k.code == KeyCode::Down { 1 } else { -1 });
                }
                _ => {}
            },
            Mode::LogSearch => match k.code {
                KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    self.jump_match(false, true);
                }
                KeyCode::Esc => {
                    self.logs.search.clear();
                    self.logs.current = None;
                    self.logs.recount();
                    self.mode = Mode::Normal;
                }
                KeyCode::Backspace => {
                    self.logs.search.pop();
                    self.logs.recount();
                }
                KeyCode::Char('u') if ctrl => {
                    self.logs.search.clear();
                    self.logs.recount();
                }
                KeyCode::Char(c) if !ctrl && !c.is_control() => {
                    self.logs.search.push(c);
                    self.logs.recount();
                }
                _ => {}
            },
            Mode::Prompt { kind, mut input, .. } => match k.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => self.submit_prompt(kind, input, cmds),
                KeyCode::Backspace => {
                    input.pop();
                    self.mode = Mode::Prompt { kind, input, error: None };
                }
                KeyCode::Char('u') if ctrl => self.mode = Mode::Prompt { kind, input: String::new(), error: None },
                KeyCode::Char(c) if !ctrl && !c.is_control() && input.chars().count() < 200 => {
                    input.push(c);
                    self.mode = Mode::Prompt { kind, input, error: None };
                }
                _ => {}
            },
            Mode::Confirm(c) => match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    match c {
                        Confirm::Op { id, name, op } => {
                            self.say(true, format!("{} {name}: sent", op.verb()));
                            cmds.push(Command::Lifecycle { id, name, op });
                        }
                        Confirm::ScaleZero { id, name } => {
                            self.say(true, format!("scale {name} to 0: sent"));
                            cmds.push(Command::Scale { id, name, replicas: 0 });
                        }
                        Confirm::Promote { base, from, to } => {
                            self.say(true, format!("promote {base} {from} → {to}: sent (health-gated; this takes a while)"));
                            cmds.push(Command::Promote { base, from, to });
                        }
                    }
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                    self.mode = Mode::Normal;
                    self.say(true, "cancelled");
                }
                _ => {}
            },
            Mode::PickTemplate { index } => {
                let n = match &self.templates {
                    Avail::Ready(t) => t.len(),
                    _ => 0,
                };
                match k.code {
                    KeyCode::Esc | KeyCode::Char('q') => self.mode = Mode::Normal,
                    KeyCode::Down | KeyCode::Char('j') => self.mode = Mode::PickTemplate { index: (index + 1).min(n.saturating_sub(1)) },
                    KeyCode::Up | KeyCode::Char('k') => self.mode = Mode::PickTemplate { index: index.saturating_sub(1) },
                    KeyCode::Enter => {
                        if let Avail::Ready(t) = &self.templates {
                            if let Some(t) = t.get(index) {
                                self.mode = Mode::Prompt {
                                    kind: PromptKind::NewService { template: t.id.clone() },
                                    input: String::new(),
                                    error: None,
                                };
                            }
                        }
                    }
                    KeyCode::Char('R') => {
                        self.templates = Avail::Loading;
                        cmds.push(Command::LoadTemplates);
                    }
                    _ => {}
                }
            }
            Mode::Normal => self.normal_key(k, cmds),
        }
    }

    fn normal_key(&mut self, k: KeyEvent, cmds: &mut Vec<Command>) {
        match k.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return;
            }
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.mode = Mode::Help;
                return;
            }
            KeyCode::Char(c @ '1'..='6') => {
                self.switch_view(View::ALL[(c as u8 - b'1') as usize], cmds);
                return;
            }
            KeyCode::Tab | KeyCode::BackTab => {
                let i = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
                let n = View::ALL.len();
                let next = if k.code == KeyCode::Tab { (i + 1) % n } else { (i + n - 1) % n };
                self.switch_view(View::ALL[next], cmds);
                return;
            }
            _ => {}
        }
        match self.view {
            View::Services => self.services_key(k, cmds),
            View::Logs => self.logs_key(k, cmds),
            View::Ports => match k.code {
                KeyCode::Down | KeyCode::Char('j') => self.ports.scroll += 1,
                KeyCode::Up | KeyCode::Char('k') => self.ports.scroll = self.ports.scroll.saturating_sub(1),
                KeyCode::Esc => self.view = View::Services,
                _ => {}
            },
            View::Events => self.events_key(k),
            View::Addons => self.addons_key(k, cmds),
            View::Grants => match k.code {
                KeyCode::Char('R') => {
                    self.grants = Avail::Loading;
                    cmds.push(Command::LoadGrants);
                }
                KeyCode::Esc => self.view = View::Services,
                _ => {}
            },
        }
    }

    pub fn switch_view(&mut self, v: View, cmds: &mut Vec<Command>) {
        self.view = v;
        match v {
            View::Logs if self.logs.target.is_none() => {
                if let Some(s) = self.selected_service() {
                    let (id, name) = (s.id.clone(), s.name.clone());
                    self.open_logs(id, name, None, cmds);
                }
            }
            View::Addons if matches!(self.addons, Avail::NotLoaded | Avail::Error(_)) => {
                self.addons = Avail::Loading;
                cmds.push(Command::LoadAddons);
            }
            View::Grants if matches!(self.grants, Avail::NotLoaded | Avail::Error(_)) => {
                self.grants = Avail::Loading;
                cmds.push(Command::LoadGrants);
            }
            _ => {}
        }
    }

    fn need_selection(&mut self) -> Option<(String, String)> {
        match self.selected_service() {
            Some(s) => Some((s.id.clone(), s.name.clone())),
            None => {
                self.say(false, "no service selected");
                None
            }
        }
    }

    fn services_key(&mut self, k: KeyEvent, cmds: &mut Vec<Command>) {
        let page = layout::table_page(self).max(1) as isize;
        match k.code {
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(page),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX / 2),
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.refresh_rows();
            }
            KeyCode::Char('o') => {
                let i = SortKey::ALL.iter().position(|s| *s == self.sort).unwrap_or(0);
                self.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
                self.refresh_rows();
            }
            KeyCode::Char('O') => {
                self.sort_desc = !self.sort_desc;
                self.refresh_rows();
            }
            KeyCode::Enter | KeyCode::Char('d') => {
                self.show_detail = !self.show_detail;
                self.clamp_offsets();
            }
            KeyCode::Char('l') => {
                if let Some((id, name)) = self.need_selection() {
                    self.view = View::Logs;
                    self.open_logs(id, name, None, cmds);
                }
            }
            KeyCode::Char('s') => {
                if let Some((id, name)) = self.need_selection() {
                    self.say(true, format!("start {name}: sent"));
                    cmds.push(Command::Lifecycle { id, name, op: Op::Start });
                }
            }
            KeyCode::Char('r') => {
                if let Some((id, name)) = self.need_selection() {
                    self.say(true, format!("restart {name}: sent"));
                    cmds.push(Command::Lifecycle { id, name, op: Op::Restart });
                }
            }
            KeyCode::Char('x') => {
                if let Some((id, name)) = self.need_selection() {
                    self.mode = Mode::Confirm(Confirm::Op { id, name, op: Op::Stop });
                }
            }
            KeyCode::Char('D') | KeyCode::Delete => {
                if let Some((id, name)) = self.need_selection() {
                    self.mode = Mode::Confirm(Confirm::Op { id, name, op: Op::Delete });
                }
            }
            KeyCode::Char('=') | KeyCode::Char('S') => {
                if let Some((id, name)) = self.need_selection() {
                    let current = self.selected_service().map(|s| s.replicas.to_string()).unwrap_or_default();
                    self.mode = Mode::Prompt { kind: PromptKind::Scale { id, name }, input: current, error: None };
                }
            }
            KeyCode::Char('n') => {
                if !matches!(self.templates, Avail::Ready(_) | Avail::Loading) {
                    self.templates = Avail::Loading;
                    cmds.push(Command::LoadTemplates);
                }
                self.mode = Mode::PickTemplate { index: 0 };
            }
            _ => {}
        }
    }

    fn open_logs(&mut self, id: String, name: String, instance: Option<u32>, cmds: &mut Vec<Command>) {
        let keep =
            LogView { wrap: self.logs.wrap, timestamps: self.logs.timestamps, search: self.logs.search.clone(), ..Default::default() };
        self.logs = LogView {
            session: self.logs.session + 1,
            target: Some(LogTarget { id: id.clone(), name, instance }),
            status: "opening…".into(),
            ..keep
        };
        cmds.push(Command::OpenLogs { session: self.logs.session, id, instance });
    }

    fn logs_key(&mut self, k: KeyEvent, cmds: &mut Vec<Command>) {
        let page = layout::log_page(self).max(1);
        match k.code {
            KeyCode::Esc => self.view = View::Services,
            KeyCode::Up | KeyCode::Char('k') => self.scroll_logs(-1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_logs(1),
            KeyCode::PageUp => self.scroll_logs(-(page as isize)),
            KeyCode::PageDown => self.scroll_logs(page as isize),
            KeyCode::Home | KeyCode::Char('g') => {
                self.logs.follow = false;
                self.logs.top = 0;
            }
            KeyCode::End | KeyCode::Char('G') => self.logs.follow = true,
            KeyCode::Char('f') => {
                if self.logs.follow {
                    self.logs.top = layout::log_bottom_top(self);
                    self.logs.follow = false;
                } else {
                    self.logs.follow = true;
                }
            }
            KeyCode::Char('w') => self.logs.wrap = !self.logs.wrap,
            KeyCode::Char('t') => self.logs.timestamps = !self.logs.timestamps,
            KeyCode::Char('/') => self.mode = Mode::LogSearch,
            KeyCode::Char('n') => self.jump_match(true, false),
            KeyCode::Char('N') => self.jump_match(false, false),
            KeyCode::Char('c') => {
                self.logs.lines.clear();
                self.logs.top = 0;
                self.logs.current = None;
                self.logs.matches = 0;
            }
            KeyCode::Char('s') if self.logs.target.is_some() => {
                let name = self.logs.target.as_ref().map(|t| t.name.clone()).unwrap_or_default();
                let input = format!("addond-{name}-{}.log", stamp(self.now));
                self.mode = Mode::Prompt { kind: PromptKind::SaveLogs, input, error: None };
            }
            KeyCode::Char('i') => {
                let Some(t) = self.logs.target.clone() else { return };
                let ordinals: Vec<u32> =
                    self.service_by_id(&t.id).map(|s| s.instances.iter().map(|i| i.ordinal).collect()).unwrap_or_default();
                let next = match t.instance {
                    None => ordinals.iter().min().copied(),
                    Some(k) => ordinals.iter().filter(|o| **o > k).min().copied(),
                };
                self.open_logs(t.id, t.name, next, cmds);
            }
            KeyCode::Char('l') => {
                // Logs of the service selected in the table (after changing it there).
                if let Some((id, name)) = self.need_selection() {
                    self.open_logs(id, name, None, cmds);
                }
            }
            _ => {}
        }
    }

    fn scroll_logs(&mut self, delta: isize) {
        let bottom = layout::log_bottom_top(self);
        let cur = if self.logs.follow { bottom } else { self.logs.top };
        let next = (cur as isize + delta).clamp(0, bottom as isize) as usize;
        if delta > 0 && next >= bottom {
            self.logs.follow = true;
        } else {
            self.logs.follow = false;
            self.logs.top = next;
        }
    }

    /// Moves to the next (`down`) or previous match; `from_end` starts at the newest line.
    fn jump_match(&mut self, down: bool, from_end: bool) {
        if self.logs.search.is_empty() {
            return;
        }
        let n = self.logs.lines.len();
        let start = if from_end { None } else { self.logs.current };
        let found = if down {
            let from = start.map(|c| c + 1).unwrap_or(0);
            (from..n).find(|&i| self.logs.is_match(&self.logs.lines[i]))
        } else {
            let to = start.unwrap_or(n);
            (0..to).rev().find(|&i| self.logs.is_match(&self.logs.lines[i]))
        };
        match found {
            Some(i) => {
                self.logs.current = Some(i);
                self.logs.follow = false;
                // Show the match a few lines below the top.
                self.logs.top = i.saturating_sub(layout::log_page(self) / 3).min(layout::log_bottom_top(self));
            }
            None => self.say(false, format!("no {} match for \"{}\"", if down { "later" } else { "earlier" }, self.logs.search)),
        }
    }

    fn events_key(&mut self, k: KeyEvent) {
        let page = layout::events_page(self).max(1);
        let bottom = self.events.len().saturating_sub(page);
        let cur = self.events_top.unwrap_or(bottom) as isize;
        let delta: isize = match k.code {
            KeyCode::Up | KeyCode::Char('k') => -1,
            KeyCode::Down | KeyCode::Char('j') => 1,
            KeyCode::PageUp => -(page as isize),
            KeyCode::PageDown => page as isize,
            KeyCode::Home | KeyCode::Char('g') => isize::MIN / 2,
            KeyCode::End | KeyCode::Char('G') => isize::MAX / 2,
            KeyCode::Char('c') => {
                self.events.clear();
                self.events_top = None;
                return;
            }
            KeyCode::Esc => {
                self.view = View::Services;
                return;
            }
            _ => return,
        };
        let next = (cur + delta).clamp(0, bottom as isize) as usize;
        self.events_top = if next >= bottom { None } else { Some(next) };
    }

    fn addons_key(&mut self, k: KeyEvent, cmds: &mut Vec<Command>) {
        let n = match &self.addons {
            Avail::Ready(l) => l.len(),
            _ => 0,
        };
        match k.code {
            KeyCode::Down | KeyCode::Char('j') => self.addon_selected = (self.addon_selected + 1).min(n.saturating_sub(1)),
            KeyCode::Up | KeyCode::Char('k') => self.addon_selected = self.addon_selected.saturating_sub(1),
            KeyCode::Char('R') => {
                self.addons = Avail::Loading;
                cmds.push(Command::LoadAddons);
            }
            KeyCode::Char('i') => match &self.addons {
                Avail::Ready(list) => {
                    if let Some(a) = list.get(self.addon_selected) {
                        let input = if a.installed.contains(&a.name) { format!("{}-2", a.name) } else { a.name.clone() };
                        self.mode = Mode::Prompt { kind: PromptKind::Install { addon: a.name.clone() }, input, error: None };
                    }
                }
                _ => self.say(false, "installing needs the addons API, which this daemon does not offer"),
            },
            KeyCode::Char('p') => match &self.addons {
                Avail::Ready(list) => match list.get(self.addon_selected).and_then(|a| a.instances.first()) {
                    Some(i) => {
                        let kind = PromptKind::Promote { base: i.base.clone() };
                        self.mode = Mode::Prompt { kind, input: "dev staging".into(), error: None };
                    }
                    None => self.say(false, "install this addon first: only installed addons have environments"),
                },
                _ => self.say(false, "promoting needs the addons API, which this daemon does not offer"),
            },
            KeyCode::Esc => self.view = View::Services,
            _ => {}
        }
    }

    fn submit_prompt(&mut self, kind: PromptKind, input: String, cmds: &mut Vec<Command>) {
        let value = input.trim().to_string();
        let fail =
            |app: &mut App, msg: &str| app.mode = Mode::Prompt { kind: kind.clone(), input: input.clone(), error: Some(msg.to_string()) };
        match &kind {
            PromptKind::Scale { id, name } => match value.parse::<u32>() {
                Ok(0) => self.mode = Mode::Confirm(Confirm::ScaleZero { id: id.clone(), name: name.clone() }),
                Ok(n) if n <= 64 => {
                    self.mode = Mode::Normal;
                    self.say(true, format!("scale {name} to {n}: sent"));
                    cmds.push(Command::Scale { id: id.clone(), name: name.clone(), replicas: n });
                }
                _ => fail(self, "a number of replicas from 0 to 64"),
            },
            PromptKind::NewService { template } => {
                if !valid_name(&value) {
                    fail(self, "1–63 characters: lowercase letters, digits and '-', starting with a letter or digit");
                } else {
                    self.mode = Mode::Normal;
                    self.say(true, format!("create {value} from {template}: sent"));
                    cmds.push(Command::CreateFromTemplate { template: template.clone(), name: value });
                }
            }
            PromptKind::Install { addon } => {
                if !valid_name(&value) {
                    fail(self, "1–63 characters: lowercase letters, digits and '-', starting with a letter or digit");
                } else {
                    self.mode = Mode::Normal;
                    self.say(true, format!("install {addon} as {value}: sent"));
                    cmds.push(Command::InstallAddon { addon: addon.clone(), instance: value });
                }
            }
            PromptKind::Promote { base } => {
                let words: Vec<&str> = value.split_whitespace().collect();
                match words.as_slice() {
                    [from, to] if from != to && valid_name(from) && valid_name(to) => {
                        self.mode = Mode::Confirm(Confirm::Promote { base: base.clone(), from: from.to_string(), to: to.to_string() });
                    }
                    _ => fail(self, "two different environments: FROM TO (e.g. dev staging)"),
                }
            }
            PromptKind::SaveLogs => {
                if value.is_empty() {
                    fail(self, "a file name");
                } else {
                    self.mode = Mode::Normal;
                    cmds.push(Command::SaveLogs { path: PathBuf::from(&value), text: self.logs.text() });
                }
            }
        }
    }

    // ---- mouse ------------------------------------------------------------------------

    pub(super) fn mouse(&mut self, m: MouseEvent, cmds: &mut Vec<Command>) {
        if self.mode != Mode::Normal {
            return;
        }
        let scroll = match m.kind {
            MouseEventKind::ScrollDown => 3,
            MouseEventKind::ScrollUp => -3,
            MouseEventKind::Down(MouseButton::Left) => {
                if m.row == 0 {
                    if let Some(v) = layout::tab_at(m.column) {
                        self.switch_view(v, cmds);
                    }
                } else if self.view == View::Services {
                    if let Some(row) = layout::table_row_at(self, m.column, m.row) {
                        self.select_row(row);
                    }
                }
                return;
            }
            _ => return,
        };
        match self.view {
            View::Services => self.move_selection(scroll / 3),
            View::Logs => self.scroll_logs(scroll),
            View::Events => self.events_key(KeyEvent::new(if scroll > 0 { KeyCode::Down } else { KeyCode::Up }, KeyModifiers::NONE)),
            View::Addons => self.addons_key(KeyEvent::new(if scroll > 0 { KeyCode::Down } else { KeyCode::Up }, KeyModifiers::NONE), cmds),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{app, code, key, svc, typed};
    use super::super::{App, Command, Event, Mode, Op, SortKey, Update};
    use crate::model::Template;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    #[test]
    fn filter_sort_and_selection_follow_the_service() {
        let mut a = app();
        a.handle(Event::Daemon(Update::Services(vec![
            svc("1", "beta", "healthy", &[8001]),
            svc("2", "alpha", "unhealthy", &[8000]),
            svc("3", "gamma", "starting", &[8002]),
        ])));
        let names = |a: &App| a.rows.iter().map(|&i| a.services[i].name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), ["alpha", "beta", "gamma"]);
        assert_eq!(a.selected_service().unwrap().name, "alpha");
        a.handle(key('j'));
        assert_eq!(a.selected_service().unwrap().name, "beta");
        // Sort by health (o cycles: name → addon → type → phase → health): sick first, selection stays.
        for _ in 0..4 {
            a.handle(key('o'));
        }
        assert_eq!(a.sort, SortKey::Health);
        assert_eq!(names(&a), ["alpha", "gamma", "beta"]);
        assert_eq!(a.selected_service().unwrap().name, "beta");
        a.handle(key('O'));
        assert_eq!(names(&a), ["beta", "gamma", "alpha"]);
        // Filter as typed; Esc clears.
        a.handle(key('/'));
        typed(&mut a, "AMM");
        assert_eq!(a.mode, Mode::Filter);
        assert_eq!(names(&a), ["gamma"]);
        assert_eq!(a.selected_service().unwrap().name, "gamma");
        a.handle(code(KeyCode::Enter));
        assert_eq!((a.mode.clone(), a.filter.as_str()), (Mode::Normal, "AMM"));
        a.handle(code(KeyCode::Esc));
        assert_eq!(names(&a).len(), 3);
        // A filter word can match health or phase.
        a.handle(key('/'));
        typed(&mut a, "unhealthy");
        assert_eq!(names(&a), ["alpha"]);
    }

    #[test]
    fn actions_and_confirmations() {
        let mut a = app();
        a.handle(Event::Daemon(Update::Services(vec![svc("svc_1", "web", "healthy", &[8000])])));
        assert_eq!(a.handle(key('r')), vec![Command::Lifecycle { id: "svc_1".into(), name: "web".into(), op: Op::Restart }]);
        assert_eq!(a.handle(key('s')), vec![Command::Lifecycle { id: "svc_1".into(), name: "web".into(), op: Op::Start }]);
        // Stop and delete ask first.
        assert!(a.handle(key('x')).is_empty());
        assert!(matches!(a.mode, Mode::Confirm(_)));
        assert!(a.handle(key('n')).is_empty());
        assert_eq!(a.mode, Mode::Normal);
        a.handle(key('D'));
        assert_eq!(a.handle(key('y')), vec![Command::Lifecycle { id: "svc_1".into(), name: "web".into(), op: Op::Delete }]);
        // Scale prompts with the current count; bad input keeps the prompt with an error.
        a.handle(key('='));
        assert!(matches!(&a.mode, Mode::Prompt { input, .. } if input == "1"));
        a.handle(code(KeyCode::Backspace));
        typed(&mut a, "99");
        assert!(a.handle(code(KeyCode::Enter)).is_empty());
        assert!(matches!(&a.mode, Mode::Prompt { error: Some(_), .. }));
        a.handle(code(KeyCode::Backspace));
        a.handle(code(KeyCode::Backspace));
        typed(&mut a, "3");
        assert_eq!(a.handle(code(KeyCode::Enter)), vec![Command::Scale { id: "svc_1".into(), name: "web".into(), replicas: 3 }]);
        // Scaling to zero stops everything: confirm.
        a.handle(key('='));
        a.handle(code(KeyCode::Backspace));
        typed(&mut a, "0");
        assert!(a.handle(code(KeyCode::Enter)).is_empty());
        assert_eq!(a.handle(key('y')), vec![Command::Scale { id: "svc_1".into(), name: "web".into(), replicas: 0 }]);
    }

    #[test]
    fn create_from_template() {
        let mut a = app();
        assert_eq!(a.handle(key('n')), vec![Command::LoadTemplates]);
        a.handle(Event::Daemon(Update::Templates(Ok(vec![
            Template { id: "rest_api_basic".into(), description: "REST".into(), service_type: "rest_api".into() },
            Template { id: "websocket_service".into(), description: "WS".into(), service_type: "websocket".into() },
        ]))));
        a.handle(key('j'));
        a.handle(code(KeyCode::Enter));
        typed(&mut a, "Bad Name");
        assert!(a.handle(code(KeyCode::Enter)).is_empty());
        a.handle(Event::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)));
        typed(&mut a, "chat");
        assert_eq!(
            a.handle(code(KeyCode::Enter)),
            vec![Command::CreateFromTemplate { template: "websocket_service".into(), name: "chat".into() }]
        );
    }
}
