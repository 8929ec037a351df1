/* wasm-echo: an addond WebAssembly addon in freestanding C (no libc, no WASI).
 *
 * The guest interface (docs/wasm.md): export `memory`, `alloc`, `execute` and,
 * optionally, `render` and `on_event`; every answer is a JSON envelope
 * {"ok": ...} or {"error": "..."} returned as (ptr << 32) | len.
 *
 * A fresh instance serves every call, so a bump allocator that never frees is
 * enough: the whole memory goes away when the call ends.
 */

typedef unsigned int u32;
typedef unsigned long long u64;

extern unsigned char __heap_base;
static u32 heap = 0;

__attribute__((export_name("alloc"))) u32 alloc(u32 len) {
    if (heap == 0) heap = (u32)&__heap_base;
    u32 p = (heap + 7u) & ~7u;
    u32 end = p + len;
    u32 have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        u32 pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (unsigned long)-1) __builtin_trap();
    }
    heap = end;
    return p;
}

static void copy(unsigned char *dst, const unsigned char *src, u32 n) {
    for (u32 i = 0; i < n; i++) dst[i] = src[i];
}

static u32 length(const char *s) {
    u32 n = 0;
    while (s[n]) n++;
    return n;
}

static int equals(const unsigned char *a, u32 alen, const char *b) {
    u32 blen = length(b);
    if (alen != blen) return 0;
    for (u32 i = 0; i < alen; i++)
        if (a[i] != (unsigned char)b[i]) return 0;
    return 1;
}

static u64 pack(u32 ptr, u32 len) { return ((u64)ptr << 32) | len; }

/* prefix + body + suffix, in fresh guest memory */
static u64 wrap(const char *prefix, const unsigned char *body, u32 body_len, const char *suffix) {
    u32 pl = length(prefix), sl = length(suffix);
    unsigned char *out = (unsigned char *)alloc(pl + body_len + sl);
    copy(out, (const unsigned char *)prefix, pl);
    copy(out + pl, body, body_len);
    copy(out + pl + body_len, (const unsigned char *)suffix, sl);
    return pack((u32)out, pl + body_len + sl);
}

static u64 text(const char *s) { return wrap(s, 0, 0, ""); }

/* What `version` answers: build.sh passes WASM_ECHO_CFLAGS, e.g. -DTAG=2. */
#ifndef TAG
#define TAG 1
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

/* execute(action, input): `echo` answers its input as it came, `version` the build's TAG. */
__attribute__((export_name("execute"))) u64 execute(const unsigned char *action, u32 action_len,
                                                     const unsigned char *input, u32 input_len) {
    if (equals(action, action_len, "echo")) return wrap("{\"ok\":", input, input_len, "}");
    if (equals(action, action_len, "version")) return text("{\"ok\":\"" STR(TAG) "\"}");
    return text("{\"error\":\"wasm-echo knows only the actions echo and version\"}");
}

/* render(widget, {"config", "context"}): a static card. */
__attribute__((export_name("render"))) u64 render(const unsigned char *widget, u32 widget_len,
                                                   const unsigned char *input, u32 input_len) {
    (void)widget; (void)widget_len; (void)input; (void)input_len;
    return text("{\"ok\":{\"html\":\"<p class=echo>echo</p>\",\"css\":\".echo{font-weight:bold}\",\"javascript\":\"\"}}");
}
