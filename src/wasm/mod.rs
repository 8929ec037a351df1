//! WebAssembly addons: the second runtime beside containers. It owns the wasmtime engine
//! (`engine.rs`: pooling allocator, fuel, the epoch ticker), the per-call limits
//! (`limits.rs`), the host functions a guest may import (`host.rs`, checked against its
//! manifest's permissions on every call) and the modules on disk with their compiled form
//! (`cache.rs`). Every call gets a fresh instance from the pool, so nothing a call leaves
//! in memory reaches the next. A call is tried first on the calling task with a small fuel
//! budget and no waiting host calls, else run on a blocking thread; at most
//! `wasm.max_concurrent` at once. The guest interface (a core-module ABI) is in docs/wasm.md.

pub mod cache;
pub mod engine;
pub mod host;
pub mod limits;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmtime::{Engine, ExternType, InstancePre, Linker, Store, Trap, ValType};

use crate::config::Config;
use cache::ModuleFiles;
use host::{CallCtx, CallState, Deferred, Denied};
use limits::CallLimits;

/// Why a module was refused or a call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The module cannot be published: not WebAssembly, or not the guest interface.
    #[error("{0}")]
    Invalid(String),
    /// Past the call's deadline, or out of fuel.
    #[error("{0}")]
    Timeout(String),
    /// The guest trapped (or broke the interface while answering).
    #[error("{0}")]
    Trapped(String),
    /// The guest wanted more memory than its limit.
    #[error("{0}")]
    Memory(String),
    /// A host function the manifest does not allow.
    #[error("{0}")]
    Denied(String),
    /// No free instance slot before the deadline.
    #[error("{0}")]
    Overloaded(String),
    /// The guest answered `{"error": …}`.
    #[error("{0}")]
    Guest(String),
    /// The addon has no module yet.
    #[error("{0}")]
    Unpublished(String),
    /// The module files could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// Where a loaded module's machine code came from (told in `addons show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled from its bytes by this daemon.
    Compiled,
    /// Read from `<data_dir>/wasm-cache/`, compiled by an earlier run.
    Cache,
}

impl LoadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadSource::Compiled => "compiled",
            LoadSource::Cache => "cache",
        }
    }
}

/// A module ready to instantiate.
pub struct LoadedModule {
    /// The SHA-256 of its bytes: its name on disk and in deployments (`sha256:<hash>`).
    pub hash: String,
    /// Imports resolved once; each call only instantiates.
    pre: InstancePre<CallState>,
    /// Whether it exports `render` (widgets).
    pub has_render: bool,
    /// Whether it exports `on_event` (events it subscribes to).
    pub has_on_event: bool,
    /// Compiled now or read from the cache.
    pub source: LoadSource,
    /// How long compiling or loading took.
    pub load_time: Duration,
}

/// What a call asks of the guest.
pub enum Entry<'a> {
    /// `execute(action, input)`.
    Execute { action: &'a str, input: &'a [u8] },
    /// `render(widget, {"config", "context"})`.
    Render { widget: &'a str, input: &'a [u8] },
    /// `on_event(event)`.
    OnEvent { event: &'a [u8] },
}

/// The runtime: one per daemon.
pub struct Wasm {
    engine: Engine,
    /// The host functions, shared by every module.
    linker: Linker<CallState>,
    /// Modules and compiled code on disk.
    pub files: ModuleFiles,
    /// One permit per instance alive (`wasm.max_concurrent`).
    slots: Arc<tokio::sync::Semaphore>,
    /// `wasm.fuel_per_call`.
    fuel: u64,
    /// Modules compiled since the start (a restart that loads from the cache adds none).
    pub compiles: AtomicU64,
    /// Calls answered by their inline attempt, on the calling task.
    pub inline_calls: AtomicU64,
    /// Calls run on a blocking thread (long, or calling the host).
    pub thread_calls: AtomicU64,
    /// Advances the epoch while the runtime lives.
    _ticker: engine::Ticker,
}

/// The guest's answer envelope.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    ok: Option<&'a serde_json::value::RawValue>,
    error: Option<serde_json::Value>,
}

fn func_is(ty: &ExternType, params: usize, result: ValType) -> bool {
    match ty {
        ExternType::Func(f) => {
            f.params().len() == params
                && f.params().all(|p| matches!(p, ValType::I32))
                && f.results().len() == 1
                && f.results().all(|r| ValType::eq(&r, &result))
        }
        _ => false,
    }
}

impl Wasm {
    pub fn new(cfg: &Config) -> Result<Arc<Self>, WasmError> {
        let engine = engine::engine(&cfg.wasm).map_err(|e| WasmError::Io(format!("cannot start the WebAssembly engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(|e| WasmError::Io(format!("cannot link the host functions: {e}")))?;
        let ticker = engine::Ticker::start(engine.clone()).map_err(|e| WasmError::Io(format!("cannot start the epoch thread: {e}")))?;
        Ok(Arc::new(Wasm {
            engine,
            linker,
            files: ModuleFiles::new(&cfg.daemon.data_dir),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.wasm.max_concurrent as usize)),
            fuel: cfg.wasm.fuel_per_call,
            compiles: AtomicU64::new(0),
            inline_calls: AtomicU64::new(0),
            thread_calls: AtomicU64::new(0),
            _ticker: ticker,
        }))
    }

    /// Checks a compiled module against the guest interface.
    fn check_interface(module: &wasmtime::Module) -> Result<(bool, bool), WasmError> {
        let names: Vec<String> = host::IMPORTS.iter().map(|(n, _)| format!("addond.{n}")).collect();
        for imp in module.imports() {
            let known = host::IMPORTS.iter().find(|(n, _)| imp.module() == "addond" && *n == imp.name());
            match known {
                Some((_, params)) if func_is(&imp.ty(), *params, ValType::I64) => {}
                Some((n, params)) => {
                    return Err(WasmError::Invalid(format!(
                        "import addond.{n} must be a function of {params} i32 parameters returning i64 (see docs/wasm.md)"
                    )))
                }
                None => {
                    return Err(WasmError::Invalid(format!(
                        "the module imports `{}.{}`, which addond does not offer (no WASI, no clock, no files, no sockets); the host functions are {}",
                        imp.module(),
                        imp.name(),
                        names.join(", ")
                    )))
                }
            }
        }
        let export = |name: &str| module.exports().find(|e| e.name() == name).map(|e| e.ty());
        if !matches!(export("memory"), Some(ExternType::Memory(_))) {
            return Err(WasmError::Invalid("the module must export its linear memory as `memory`".into()));
        }
        if !export("alloc").is_some_and(|t| func_is(&t, 1, ValType::I32)) {
            return Err(WasmError::Invalid("the module must export `alloc(len: i32) -> i32`".into()));
        }
        if !export("execute").is_some_and(|t| func_is(&t, 4, ValType::I64)) {
            return Err(WasmError::Invalid(
                "the module must export `execute(action_ptr, action_len, input_ptr, input_len: i32) -> i64`".into(),
            ));
        }
        let has_render = match export("render") {
            None => false,
            Some(t) if func_is(&t, 4, ValType::I64) => true,
            Some(_) => {
                return Err(WasmError::Invalid(
                    "`render` must be `render(widget_ptr, widget_len, input_ptr, input_len: i32) -> i64`".into(),
                ))
            }
        };
        let has_on_event = match export("on_event") {
            None => false,
            Some(t) if func_is(&t, 2, ValType::I64) => true,
            Some(_) => return Err(WasmError::Invalid("`on_event` must be `on_event(event_ptr, event_len: i32) -> i64`".into())),
        };
        Ok((has_render, has_on_event))
    }

    fn ready(&self, hash: String, module: wasmtime::Module, source: LoadSource, t0: Instant) -> Result<LoadedModule, WasmError> {
        let (has_render, has_on_event) = Self::check_interface(&module)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| WasmError::Invalid(format!("cannot link the module: {e}")))?;
        Ok(LoadedModule { hash, pre, has_render, has_on_event, source, load_time: t0.elapsed() })
    }

    fn compile(&self, hash: &str, bytes: &[u8]) -> Result<wasmtime::Module, WasmError> {
        let t0 = Instant::now();
        let module =
            wasmtime::Module::new(&self.engine, bytes).map_err(|e| WasmError::Invalid(format!("not a valid WebAssembly module: {e}")))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %hash, ms = t0.elapsed().as_secs_f64() * 1e3, "compiled WebAssembly module");
        Ok(module)
    }

    /// Validates and compiles a module being published, and keeps its bytes and compiled
    /// form on disk. Blocking (compiling takes a while): run it off the async threads.
    pub fn publish_blocking(&self, bytes: &[u8]) -> Result<LoadedModule, WasmError> {
        let t0 = Instant::now();
        let hash = cache::module_hash(bytes);
        // Published before (a rollback by hand, a module going back and forth): its
        // compiled form is in the cache, and the bytes on disk are these.
        if self.files.cache_path(&hash).exists() && self.files.module_path(&hash).exists() {
            if let Ok(loaded) = self.load_blocking(&hash) {
                return Ok(loaded);
            }
        }
        let module = self.compile(&hash, bytes)?;
        let loaded = self.ready(hash.clone(), module.clone(), LoadSource::Compiled, t0)?;
        self.files.save_module(&hash, bytes).map_err(|e| WasmError::Io(format!("cannot keep the module: {e}")))?;
        self.save_compiled(&hash, &module);
        Ok(loaded)
    }

    fn save_compiled(&self, hash: &str, module: &wasmtime::Module) {
        match module.serialize() {
            Ok(code) => {
                if let Err(e) = self.files.save_compiled(hash, &code) {
                    tracing::warn!(module = %hash, error = %e, "cannot cache the compiled module; the next start compiles it again");
                }
            }
            Err(e) => tracing::warn!(module = %hash, error = %e, "cannot serialise the compiled module"),
        }
    }

    /// Loads a published module by hash: its compiled form from the cache, else compiled
    /// again from its bytes (and cached). Blocking.
    pub fn load_blocking(&self, hash: &str) -> Result<LoadedModule, WasmError> {
        if !cache::is_hash(hash) {
            return Err(WasmError::Io(format!("`{hash}` is not a module hash")));
        }
        let t0 = Instant::now();
        let path = self.files.cache_path(hash);
        if path.exists() {
            // SAFETY: `deserialize_file` trusts the file to be `Module::serialize` output of a
            // compatible engine (wasmtime checks the version and the engine's settings, not
            // the code). Only addond writes `<data_dir>/wasm-cache/`, inside its own data
            // directory (mode 0700, owned by the daemon's user), atomically (a temporary
            // file renamed over), and only from `Module::serialize` of a module it compiled;
            // a file that does not load is compiled again from the module's bytes.
            match unsafe { wasmtime::Module::deserialize_file(&self.engine, &path) } {
                Ok(module) => {
                    tracing::info!(module = %hash, ms = t0.elapsed().as_secs_f64() * 1e3, "loaded precompiled WebAssembly module from the cache");
                    return self.ready(hash.to_string(), module, LoadSource::Cache, t0);
                }
                Err(e) => tracing::warn!(module = %hash, error = %e, "the cached module does not load; compiling it again"),
            }
        }
        let bytes = self.files.read_module(hash).map_err(|e| WasmError::Io(format!("module {hash} is not on disk: {e}")))?;
        let module = self.compile(hash, &bytes)?;
        self.save_compiled(hash, &module);
        self.ready(hash.to_string(), module, LoadSource::Compiled, t0)
    }

    /// Calls a guest: a fresh instance, at most `memory` bytes of memory, stopped at
    /// `timeout`. The `ok` of its answer as JSON text.
    ///
    /// Most calls are short and call no host function, so each call is first tried right
    /// here, on the calling task, with at most [`INLINE_FUEL`] units of fuel: a few
    /// microseconds and no hand-off to another thread. A guest that needs more, or calls a
    /// host function that waits (storage, events, other addons), is stopped before it did
    /// anything visible and the call starts over on a blocking thread with its full budget,
    /// so no worker thread is ever held for longer than the inline budget.
    pub async fn call(
        self: &Arc<Self>,
        module: Arc<LoadedModule>,
        ctx: Arc<CallCtx>,
        entry: Entry<'_>,
        memory: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, WasmError> {
        let t0 = Instant::now();
        let (func, a, b): (&'static str, &[u8], Option<&[u8]>) = match entry {
            Entry::Execute { action, input } => ("execute", action.as_bytes(), Some(input)),
            Entry::Render { widget, input } => ("render", widget.as_bytes(), Some(input)),
            Entry::OnEvent { event } => ("on_event", event, None),
        };
        // A permit is one instance, memory and table of the pool.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => {
                let call = Call { func, a, b, memory: memory as usize, left: timeout, timeout };
                match self.call_sync(&module, ctx.clone(), &call, Some(INLINE_FUEL.min(self.fuel))) {
                    Some(r) => {
                        self.inline_calls.fetch_add(1, Ordering::Relaxed);
                        return r;
                    }
                    None => p,
                }
            }
            Err(_) => match tokio::time::timeout(timeout, self.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(WasmError::Overloaded(
                        "every WebAssembly instance slot stayed busy until the call's deadline (wasm.max_concurrent); try again".into(),
                    ))
                }
            },
        };
        self.thread_calls.fetch_add(1, Ordering::Relaxed);
        let left = timeout.saturating_sub(t0.elapsed());
        let (a, b) = (a.to_vec(), b.map(<[u8]>::to_vec));
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let call = Call { func, a: &a, b: b.as_deref(), memory: memory as usize, left, timeout };
            me.call_sync(&module, ctx, &call, None)
        })
        .await;
        match r {
            Ok(Some(r)) => r,
            Ok(None) => Err(WasmError::Trapped("the call was deferred twice".into())),
            Err(e) => Err(WasmError::Trapped(format!("the call ended abnormally: {e}"))),
        }
    }

    /// Runs a call on this thread. `inline`: the fuel of an inline attempt, which answers
    /// `None` when the guest needs more fuel than that or calls a host function that waits.
    fn call_sync(
        &self,
        module: &LoadedModule,
        ctx: Arc<CallCtx>,
        call: &Call<'_>,
        inline: Option<u64>,
    ) -> Option<Result<Vec<u8>, WasmError>> {
        let state = CallState { limits: CallLimits::new(call.memory), ctx: Some(ctx), inline: inline.is_some() };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let fuel = inline.unwrap_or(self.fuel);
        if let Err(e) = store.set_fuel(fuel) {
            return Some(Err(WasmError::Trapped(e.to_string())));
        }
        store.set_epoch_deadline((call.left.as_nanos() / engine::TICK.as_nanos()) as u64 + 1);
        store.epoch_deadline_trap();
        let r = run(&mut store, module, call.func, call.a, call.b);
        let refused = store.data().limits.refused.clone();
        let out = match r {
            Ok(out) => out,
            Err(e) => {
                if let Some(msg) = refused {
                    return Some(Err(WasmError::Memory(msg)));
                }
                if e.downcast_ref::<Deferred>().is_some() {
                    return None;
                }
                if let Some(d) = e.downcast_ref::<Denied>() {
                    return Some(Err(WasmError::Denied(d.0.clone())));
                }
                let err = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => WasmError::Timeout(format!(
                        "the guest ran past the call's deadline of {:.3} s and was stopped",
                        call.timeout.as_secs_f64()
                    )),
                    // Out of the inline attempt's fuel, not the call's: start over.
                    Some(Trap::OutOfFuel) if inline.is_some() && fuel < self.fuel => return None,
                    Some(Trap::OutOfFuel) => {
                        WasmError::Timeout(format!("the guest used up its fuel ({} units, wasm.fuel_per_call) and was stopped", self.fuel))
                    }
                    Some(t) => WasmError::Trapped(format!("the guest trapped: {t}")),
                    None => {
                        WasmError::Trapped(format!("the guest failed: {}", e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")))
                    }
                };
                return Some(Err(err));
            }
        };
        let reply: Reply = match serde_json::from_slice(&out) {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(WasmError::Trapped(format!(
                    "the guest's answer is not the JSON envelope {{\"ok\": …}} or {{\"error\": …}}: {e}"
                ))))
            }
        };
        Some(match (reply.ok, reply.error) {
            (_, Some(err)) => Err(WasmError::Guest(err.as_str().map(str::to_string).unwrap_or_else(|| err.to_string()))),
            (Some(ok), None) => Ok(ok.get().as_bytes().to_vec()),
            (None, None) => Ok(b"null".to_vec()),
        })
    }
}

/// Fuel of a call's inline attempt: about a few tens of microseconds of guest code, the
/// most a call may hold the task (a gateway worker with other connections) that made it.
const INLINE_FUEL: u64 = 100_000;

/// One call's entry point, arguments and limits.
struct Call<'a> {
    /// `execute`, `render` or `on_event`.
    func: &'static str,
    /// The first argument (action, widget or event).
    a: &'a [u8],
    /// The second (the input), for `execute` and `render`.
    b: Option<&'a [u8]>,
    /// Most bytes of linear memory.
    memory: usize,
    /// Time left until the deadline.
    left: Duration,
    /// The whole call's timeout (told in the error).
    timeout: Duration,
}

/// Instantiates, copies the arguments in, calls `func`, copies the answer out.
fn run(store: &mut Store<CallState>, module: &LoadedModule, func: &str, a: &[u8], b: Option<&[u8]>) -> wasmtime::Result<Vec<u8>> {
    let inst = module.pre.instantiate(&mut *store)?;
    let memory = inst.get_memory(&mut *store, "memory").ok_or_else(|| wasmtime::Error::msg("the module exports no `memory`"))?;
    let alloc = inst.get_typed_func::<i32, i32>(&mut *store, "alloc")?;
    let pass = |store: &mut Store<CallState>, bytes: &[u8]| -> wasmtime::Result<(i32, i32)> {
        let len = i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("an argument is over 2 GiB"))?;
        let p = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, p as u32 as usize, bytes)
            .map_err(|_| wasmtime::Error::msg(format!("`alloc({len})` returned {p}, where {len} bytes do not fit")))?;
        Ok((p, len))
    };
    let (p1, l1) = pass(store, a)?;
    let packed = match b {
        None => inst.get_typed_func::<(i32, i32), i64>(&mut *store, func)?.call(&mut *store, (p1, l1))?,
        Some(b) => {
            let (p2, l2) = pass(store, b)?;
            inst.get_typed_func::<(i32, i32, i32, i32), i64>(&mut *store, func)?.call(&mut *store, (p1, l1, p2, l2))?
        }
    };
    let (p, l) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xffff_ffff) as usize);
    memory
        .data(&*store)
        .get(p..p.saturating_add(l))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg(format!("`{func}` answered {l} bytes at {p}, outside its memory")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::host::{Host, HostError};
    use futures_util::future::BoxFuture;
    use serde_json::Value;

    /// A host that grants nothing but answers `kv_get` (to show the permission check runs
    /// before it is asked).
    struct NoHost;

    impl Host for NoHost {
        fn kv_get<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
            Box::pin(async { Ok(Some(b"secret".to_vec())) })
        }
        fn kv_set<'a>(&'a self, _: &'a str, _: &'a str, _: Vec<u8>) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn emit<'a>(&'a self, _: &'a str, _: &'a str, _: Value) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn execute<'a>(&'a self, _: &'a str, _: &'a [String], _: &'a str, _: &'a str, _: Value) -> BoxFuture<'a, Result<Value, HostError>> {
            Box::pin(async { Err(HostError::Failed("no".into())) })
        }
    }

    const ECHO: &str = r#"
(module
  (import "addond" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (import "addond" "config" (func $config (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"ok\":")
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func $recurse (param $n i64) (result i64) (i64.add (call $recurse (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
  (func (export "execute") (param $ap i32) (param $al i32) (param $ip i32) (param $il i32) (result i64)
    (local $out i32)
    (if (i32.eq (i32.load8_u (local.get $ap)) (i32.const 107)) (then
      (return (call $kv_get (local.get $ap) (local.get $al)))))
    (if (i32.eq (i32.load8_u (local.get $ap)) (i32.const 108)) (then (loop $l (br $l))))
    (if (i32.eq (i32.load8_u (local.get $ap)) (i32.const 99)) (then (return (call $config))))
    (if (i32.eq (i32.load8_u (local.get $ap)) (i32.const 114)) (then (return (call $recurse (i64.const 0)))))
    (local.set $out (call $alloc (i32.add (local.get $il) (i32.const 7))))
    (memory.copy (local.get $out) (i32.const 16) (i32.const 6))
    (memory.copy (i32.add (local.get $out) (i32.const 6)) (local.get $ip) (local.get $il))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $il) (i32.const 6))) (i32.const 125))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32)) (i64.extend_i32_u (i32.add (local.get $il) (i32.const 7))))))
"#;

    fn runtime(dir: &std::path::Path) -> Arc<Wasm> {
        let mut cfg = Config::default();
        cfg.daemon.data_dir = dir.to_path_buf();
        cfg.wasm.max_concurrent = 4;
        Wasm::new(&cfg).unwrap()
    }

    fn ctx(permissions: &[&str]) -> Arc<CallCtx> {
        Arc::new(CallCtx {
            instance: "t".into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            emits: vec![],
            dependencies: vec![],
            config: serde_json::json!({"greeting": "hi"}),
            host: Arc::new(NoHost),
            rt: tokio::runtime::Handle::current(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_check_permissions_stop_at_the_deadline_and_load_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let bytes = wat::parse_str(ECHO).unwrap();
        let m = Arc::new(rt.publish_blocking(&bytes).unwrap());
        assert_eq!((m.source, m.has_render, m.has_on_event), (LoadSource::Compiled, false, false));
        let call = |action: &'static str, perms: &'static [&'static str], timeout_ms: u64| {
            let (rt, m) = (rt.clone(), m.clone());
            async move {
                rt.call(m, ctx(perms), Entry::Execute { action, input: br#"{"a":1}"# }, 1 << 20, Duration::from_millis(timeout_ms)).await
            }
        };
        let paths = || (rt.inline_calls.load(Ordering::Relaxed), rt.thread_calls.load(Ordering::Relaxed));
        assert_eq!(call("echo", &[], 1000).await.unwrap(), br#"{"a":1}"#);
        assert_eq!(paths(), (1, 0), "a short call without host calls answers inline");
        match call("kv", &[], 1000).await {
            Err(WasmError::Denied(m)) => assert!(m.contains("`storage`"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(paths(), (2, 0), "a denial is the same on either path");
        assert_eq!(call("kv", &["storage"], 1000).await.unwrap(), br#""secret""#);
        assert_eq!(paths(), (2, 1), "a storage read waits: on a blocking thread");
        // Its own config needs no permission, and no waiting.
        assert_eq!(call("config", &[], 1000).await.unwrap(), br#"{"greeting":"hi"}"#);
        assert_eq!(paths(), (3, 1));
        let t0 = Instant::now();
        assert!(matches!(call("loop", &[], 100).await, Err(WasmError::Timeout(_))));
        assert!(t0.elapsed() < Duration::from_millis(600), "{:?}", t0.elapsed());
        assert_eq!(paths(), (3, 2), "past the inline fuel: on a blocking thread, to its deadline");
        // Unbounded recursion on the calling task's own stack: a trap, not a crash.
        match call("recurse", &[], 1000).await {
            Err(WasmError::Trapped(m)) => assert!(m.contains("stack"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A second runtime on the same directory (a restart) compiles nothing.
        let again = runtime(dir.path());
        let loaded = again.load_blocking(&m.hash).unwrap();
        assert_eq!(loaded.source, LoadSource::Cache);
        assert_eq!(again.compiles.load(Ordering::Relaxed), 0);
        // Refused: not WebAssembly; no `execute`.
        assert!(matches!(rt.publish_blocking(b"\0asm junk"), Err(WasmError::Invalid(_))));
        let no_exec =
            wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0)))"#)
                .unwrap();
        match rt.publish_blocking(&no_exec) {
            Err(WasmError::Invalid(m)) => assert!(m.contains("execute"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// Instantiate + call of a small guest inside the daemon's runtime: prints the p50 and
    /// p99 over many calls (bench/wasm.sh runs it in a release build); the bound here only
    /// catches a call that stopped using the pool (milliseconds instead of microseconds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instantiate_and_call_timing() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let m = Arc::new(rt.publish_blocking(&wat::parse_str(ECHO).unwrap()).unwrap());
        let c = ctx(&[]);
        let mut inner = Vec::new();
        for _ in 0..2000 {
            let call = Call {
                func: "execute",
                a: b"echo",
                b: Some(b"{}"),
                memory: 1 << 20,
                left: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            };
            let t0 = Instant::now();
            let r = rt.call_sync(&m, c.clone(), &call, Some(INLINE_FUEL));
            inner.push(t0.elapsed());
            assert!(matches!(r, Some(Ok(_))));
            let r = rt.call(m.clone(), c.clone(), Entry::Execute { action: "echo", input: b"{}" }, 1 << 20, Duration::from_secs(1)).await;
            assert!(r.is_ok());
        }
        // Every one of them answered inline, none on a blocking thread.
        assert_eq!((rt.inline_calls.load(Ordering::Relaxed), rt.thread_calls.load(Ordering::Relaxed)), (2000, 0));
        inner.sort();
        let (p50, p99) = (inner[inner.len() / 2], inner[inner.len() * 99 / 100]);
        eprintln!("wasm instantiate+call: p50 {p50:?} p99 {p99:?} (inline, on the calling task; {} calls)", inner.len());
        assert!(p50 < Duration::from_millis(2), "p50 {p50:?}");
    }
}
