//! Host functions: the only things a guest can reach, imported from module `addond`.
//! Each is checked against the calling addon's manifest permissions on every call, like
//! the addon API checks a container's (`events.emit` with the names the manifest emits,
//! `storage`, `addons.execute` for the addons it depends on). A missing permission stops
//! the call with a denial (the caller gets 403 `permission_denied`); any other failure
//! is handed to the guest as `{"error": "…"}` for it to deal with.
//!
//! Every import answers with a JSON envelope, `{"ok": …}` or `{"error": "…"}`, written
//! into guest memory through the guest's `alloc` and returned as `ptr << 32 | len`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use wasmtime::{Caller, Extern, Linker};

use super::limits::CallLimits;

/// What the daemon does for a guest; implemented by the addons catalogue (which owns the
/// key-value store, the events and the other addons), so this module imports none of them.
pub trait Host: Send + Sync {
    /// Reads a key of the addon instance's store.
    fn kv_get<'a>(&'a self, instance: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Writes a key (within the addon API's quotas).
    fn kv_set<'a>(&'a self, instance: &'a str, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<(), String>>;
    /// Emits an event with the instance as its source.
    fn emit<'a>(&'a self, instance: &'a str, name: &'a str, data: Value) -> BoxFuture<'a, Result<(), String>>;
    /// Runs another addon's action; its JSON answer. The target's addon name must be among
    /// `dependencies` (checked by the implementation, which knows the target's manifest).
    fn execute<'a>(
        &'a self,
        instance: &'a str,
        dependencies: &'a [String],
        target: &'a str,
        action: &'a str,
        input: Value,
    ) -> BoxFuture<'a, Result<Value, HostError>>;
}

/// Why a host call that may be denied did not succeed.
pub enum HostError {
    /// The manifest does not allow it: the guest's call stops with a denial.
    Denied(String),
    /// It failed: the guest gets `{"error": …}`.
    Failed(String),
}

/// Who is calling and what its manifest allows, for one call.
pub struct CallCtx {
    /// The addon instance the guest runs as (its storage, the source of its events).
    pub instance: String,
    /// The manifest's `permissions`.
    pub permissions: Vec<String>,
    /// The manifest's `events.emits`.
    pub emits: Vec<String>,
    /// The addon names of the manifest's `dependencies`.
    pub dependencies: Vec<String>,
    /// The instance's config (defaults applied), what `config` answers: the guest's view
    /// of what a container reads from its environment.
    pub config: Value,
    /// The daemon's side of the imports.
    pub host: Arc<dyn Host>,
    /// The runtime the host's futures run on (a guest that calls the host runs on a
    /// blocking thread).
    pub rt: tokio::runtime::Handle,
}

impl CallCtx {
    fn require(&self, permission: &str, detail: &str) -> Result<(), Denied> {
        if self.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(Denied(format!("{detail}: the addon's manifest lacks the `{permission}` permission")))
        }
    }
}

/// A host call the manifest does not allow; it stops the guest's call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// A host call made during a call's first, inline attempt (see `Wasm::call`): the attempt
/// stops before the host does anything, and the call starts over on a blocking thread,
/// where host calls can wait. The attempt had no effect anyone can see (a fresh instance,
/// nothing written), so starting over is safe.
#[derive(Debug, thiserror::Error)]
#[error("the guest calls the host; the call continues on a blocking thread")]
pub struct Deferred;

/// The data of a store: one call's limits and context.
pub struct CallState {
    /// Memory and table caps (the store's limiter).
    pub limits: CallLimits,
    /// Who is calling (none in the validation instance of a publish).
    pub ctx: Option<Arc<CallCtx>>,
    /// The inline attempt, on an async task: host calls that wait (storage, events,
    /// other addons) are [`Deferred`] instead of blocking the task's thread.
    pub inline: bool,
}

/// Stops an inline attempt before a host call that would wait (after its permission
/// check, whose denial is the same on either path).
fn defer_if_inline(caller: &Caller<'_, CallState>) -> wasmtime::Result<()> {
    if caller.data().inline {
        return Err(wasmtime::Error::new(Deferred));
    }
    Ok(())
}

/// The imports a guest may declare: module `addond`, these names and signatures.
pub const IMPORTS: &[(&str, usize)] = &[("config", 0), ("emit_event", 4), ("kv_get", 2), ("kv_set", 4), ("execute", 6)];

/// Keys are what the addon API accepts.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control()) {
        return Err("keys are 1–256 printable characters".into());
    }
    Ok(())
}

fn memory(caller: &mut Caller<'_, CallState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the module exports no `memory`")),
    }
}

/// The guest's bytes at `ptr..ptr+len`, copied out.
pub fn read_guest(caller: &mut Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&caller)
        .get(p..p.saturating_add(l))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg(format!("the guest passed {l} bytes at {p}, outside its memory")))
}

fn read_text(caller: &mut Caller<'_, CallState>, ptr: i32, len: i32, what: &str) -> wasmtime::Result<String> {
    String::from_utf8(read_guest(caller, ptr, len)?).map_err(|_| wasmtime::Error::msg(format!("{what} is not UTF-8")))
}

/// Copies `bytes` into guest memory through its `alloc`; `ptr << 32 | len`.
fn write_guest(caller: &mut Caller<'_, CallState>, bytes: &[u8]) -> wasmtime::Result<i64> {
    let alloc = match caller.get_export("alloc") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
        _ => return Err(wasmtime::Error::msg("the module exports no `alloc(len: i32) -> i32`")),
    };
    let ptr = alloc.call(&mut *caller, bytes.len() as i32)?;
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| wasmtime::Error::msg(format!("`alloc` returned {ptr}, where {} bytes do not fit", bytes.len())))?;
    Ok(((ptr as u32 as i64) << 32) | bytes.len() as i64)
}

fn answer(caller: &mut Caller<'_, CallState>, r: Result<Value, String>) -> wasmtime::Result<i64> {
    let v = match r {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": e}),
    };
    write_guest(caller, v.to_string().as_bytes())
}

fn ctx(caller: &Caller<'_, CallState>) -> wasmtime::Result<Arc<CallCtx>> {
    caller.data().ctx.clone().ok_or_else(|| wasmtime::Error::msg("host functions cannot be called while a module is validated"))
}

/// Adds every import to the linker.
pub fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    // Its own config needs no permission: a container gets it in its environment too.
    linker.func_wrap("addond", "config", |mut caller: Caller<'_, CallState>| -> wasmtime::Result<i64> {
        let c = ctx(&caller)?;
        answer(&mut caller, Ok(c.config.clone()))
    })?;
    linker.func_wrap("addond", "kv_get", |mut caller: Caller<'_, CallState>, kp: i32, kl: i32| -> wasmtime::Result<i64> {
        let c = ctx(&caller)?;
        c.require("storage", "reading storage").map_err(wasmtime::Error::new)?;
        defer_if_inline(&caller)?;
        let key = read_text(&mut caller, kp, kl, "the key")?;
        let r = check_key(&key).and_then(|_| c.rt.block_on(c.host.kv_get(&c.instance, &key))).map(|v| match v {
            Some(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            None => Value::Null,
        });
        answer(&mut caller, r)
    })?;
    linker.func_wrap(
        "addond",
        "kv_set",
        |mut caller: Caller<'_, CallState>, kp: i32, kl: i32, vp: i32, vl: i32| -> wasmtime::Result<i64> {
            let c = ctx(&caller)?;
            c.require("storage", "writing storage").map_err(wasmtime::Error::new)?;
            defer_if_inline(&caller)?;
            let key = read_text(&mut caller, kp, kl, "the key")?;
            let value = read_guest(&mut caller, vp, vl)?;
            let r = check_key(&key).and_then(|_| c.rt.block_on(c.host.kv_set(&c.instance, &key, value))).map(|_| Value::Bool(true));
            answer(&mut caller, r)
        },
    )?;
    linker.func_wrap(
        "addond",
        "emit_event",
        |mut caller: Caller<'_, CallState>, np: i32, nl: i32, dp: i32, dl: i32| -> wasmtime::Result<i64> {
            let c = ctx(&caller)?;
            c.require("events.emit", "emitting events").map_err(wasmtime::Error::new)?;
            let name = read_text(&mut caller, np, nl, "the event name")?;
            if !c.emits.iter().any(|e| e == &name) {
                return Err(wasmtime::Error::new(Denied(format!(
                    "`{name}` is not among the events this addon's manifest emits ({})",
                    c.emits.join(", ")
                ))));
            }
            defer_if_inline(&caller)?;
            let data = read_guest(&mut caller, dp, dl)?;
            let r = match serde_json::from_slice::<Value>(&data) {
                Ok(data) => c.rt.block_on(c.host.emit(&c.instance, &name, data)).map(|_| Value::Bool(true)),
                Err(e) => Err(format!("the event data is not JSON: {e}")),
            };
            answer(&mut caller, r)
        },
    )?;
    linker.func_wrap(
        "addond",
        "execute",
        |mut caller: Caller<'_, CallState>, ap: i32, al: i32, xp: i32, xl: i32, ip: i32, il: i32| -> wasmtime::Result<i64> {
            let c = ctx(&caller)?;
            c.require("addons.execute", "calling other addons").map_err(wasmtime::Error::new)?;
            defer_if_inline(&caller)?;
            let target = read_text(&mut caller, ap, al, "the addon name")?;
            let action = read_text(&mut caller, xp, xl, "the action name")?;
            let input = read_guest(&mut caller, ip, il)?;
            let r = match serde_json::from_slice::<Value>(&input) {
                Ok(input) => match c.rt.block_on(c.host.execute(&c.instance, &c.dependencies, &target, &action, input)) {
                    Ok(v) => Ok(v),
                    // A dependency missing from the manifest is a denial like a missing permission.
                    Err(HostError::Denied(m)) => return Err(wasmtime::Error::new(Denied(m))),
                    Err(HostError::Failed(m)) => Err(m),
                },
                Err(e) => Err(format!("the action input is not JSON: {e}")),
            };
            answer(&mut caller, r)
        },
    )?;
    Ok(())
}
