//! nftables commands run in this process through libnftables, the library the `nft` binary is a
//! thin front end of. The runner's only `unsafe` outside `sandbox::sys`, for the same reason:
//! a foreign call no safe crate wraps.
//!
//! Why in-process: every allowlist run applies its table and reads it back before its workload
//! may start, and each DNS answer adds set elements while it runs. As `nft` processes these
//! cost 2.6-3.7 ms each on the development VM (process start, dynamic linking of six
//! libraries, libnftables' set-up), against 0.6-1.5 ms for the same call here. The commands,
//! their documents and their outputs are exactly the binary's with `-j -p` (JSON, layer 4
//! protocols as numbers): `nft -j -p <args>` hands the library its arguments joined by spaces,
//! `nft -j -p -f -` the document, and prints the library's output and error buffers.
//!
//! Why by hand: the existing bindings (`libnftables1-sys`, `libnftables-sys`) link at build
//! time, which needs libnftables' development files wherever safe-run is built. This loads
//! `libnftables.so.1` (Debian's `libnftables1`, which the `nftables` package depends on) when
//! a run first needs it, with `libloading`, and uses eight functions of its stable API
//! (libnftables(3)). A host without it fails the one run that asks for an allowlist, with a
//! hint, as a missing `nft` did.
//!
//! libnftables keeps some state outside its contexts (its number library's set-up, the
//! xtables registry), so calls are serialised by one lock. Each call uses a context of its own,
//! freed before the lock is released: nothing of a call outlives it.
//!
//! libnftables ends the whole process (`exit`) when a new context cannot open its netlink
//! socket (nftables' `netlink_init_error`: out of descriptors, no nf_tables netlink). So before
//! each context this module opens and closes a netfilter netlink socket itself and returns an
//! error when that fails. What is left is a race with another thread taking the process's last
//! descriptor between the two opens, and the library's own exit on a failed allocation: either
//! ends the runner as a SIGKILL would, which gc recovers from (docs/run.md, "Cleanup, every
//! path"). The library also writes a few diagnostics straight to stderr (`... (you must be
//! root)`), beside the error it returns.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

/// `NFT_CTX_DEFAULT`.
const CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON` (libnftables.h: `1 << 4`).
const OUTPUT_JSON: c_uint = 1 << 4;
/// `NFT_CTX_OUTPUT_NUMERIC_PROTO` (`1 << 7`, `nft -p`): layer 4 protocols print as numbers.
/// Printing their names makes the library ask NSS (`getprotobynumber`), which on Debian's
/// `protocols: db files` first searches about 80 paths for `libnss_db.so.2` while holding the
/// dynamic loader's lock: every thread this process starts meanwhile waits for it.
const OUTPUT_NUMERIC_PROTO: c_uint = 1 << 7;
/// The soname Debian's `libnftables1` installs.
const SONAME: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type Buffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The loaded library and the functions used, valid as long as `_library` is (forever: it is
/// kept in a static).
struct Api {
    _library: libloading::Library,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    output_set_flags: SetFlags,
    buffer_output: Buffer,
    buffer_error: Buffer,
    get_output_buffer: GetBuffer,
    get_error_buffer: GetBuffer,
    run_cmd_from_buffer: RunCmd,
}

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftFailure {
    /// libnftables could not be loaded, or lacks a function.
    Unavailable(String),
    /// The input is not one this module passes on (see [`run`] and [`run_words`]).
    Refused(String),
    /// libnftables ran it and failed: its error buffer.
    Failed(String),
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();
static CALLS: Mutex<()> = Mutex::new(());

fn api() -> Result<&'static Api, NftFailure> {
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| NftFailure::Unavailable(e.clone()))
}

fn load() -> Result<Api, String> {
    // SAFETY: loading runs libnftables' and its dependencies' initialisers, which only set up
    // their own state; the library is a system library of the host, found by the loader's
    // usual search (the same file the `nft` binary would load).
    let library = unsafe { libloading::Library::new(SONAME) }
        .map_err(|e| format!("cannot load {SONAME}: {e}"))?;
    macro_rules! symbol {
        ($name:literal, $ty:ty) => {{
            // SAFETY: the symbol is declared in libnftables.h with exactly this signature
            // (libnftables(3)); the pointer is copied out and used only while `library` lives,
            // which `Api` keeps alive with it.
            let s = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{SONAME} has no {}: {e}", $name))?;
            *s
        }};
    }
    let ctx_new = symbol!("nft_ctx_new", CtxNew);
    let ctx_free = symbol!("nft_ctx_free", CtxFree);
    let output_set_flags = symbol!("nft_ctx_output_set_flags", SetFlags);
    let buffer_output = symbol!("nft_ctx_buffer_output", Buffer);
    let buffer_error = symbol!("nft_ctx_buffer_error", Buffer);
    let get_output_buffer = symbol!("nft_ctx_get_output_buffer", GetBuffer);
    let get_error_buffer = symbol!("nft_ctx_get_error_buffer", GetBuffer);
    let run_cmd_from_buffer = symbol!("nft_run_cmd_from_buffer", RunCmd);
    Ok(Api {
        _library: library,
        ctx_new,
        ctx_free,
        output_set_flags,
        buffer_output,
        buffer_error,
        get_output_buffer,
        get_error_buffer,
        run_cmd_from_buffer,
    })
}

/// What `nft -j <words>` prints: the words joined by spaces, as the binary joins its
/// arguments. The library parses one command line, so only plain words (letters, digits, `_`,
/// `-`, `.`: families, table names, `list`, `delete`, `tables`) are passed on; any other is
/// refused, so that no argument can become a second command.
pub fn run_words(words: &[String]) -> Result<String, NftFailure> {
    if let Some(odd) = words.iter().find(|w| !is_plain_word(w)) {
        return Err(NftFailure::Refused(format!(
            "{odd:?} is not a plain nftables word"
        )));
    }
    run(&words.join(" "))
}

fn is_plain_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What `nft -j` prints for `input`: a JSON document (`{"nftables": [...]}`) to apply in one
/// transaction, or a command line such as `list table inet <name>`. Returns the output buffer.
/// An input with a NUL byte is refused (it could not reach the library whole).
pub fn run(input: &str) -> Result<String, NftFailure> {
    let input = CString::new(input)
        .map_err(|_| NftFailure::Refused("the nftables input contains a NUL byte".into()))?;
    let api = api()?;
    // A poisoned lock only means another call panicked; the library's state is its own.
    let _serial = CALLS.lock().unwrap_or_else(|p| p.into_inner());
    // The socket the context is about to open must be possible, or the library exits (above).
    drop(
        super::netlink::open(nix::sys::socket::SockProtocol::NetlinkNetFilter).map_err(|e| {
            NftFailure::Failed(format!("cannot open a netfilter netlink socket: {e}"))
        })?,
    );
    // SAFETY: `nft_ctx_new` returns a fresh context or NULL (checked).
    let ctx = unsafe { (api.ctx_new)(CTX_DEFAULT) };
    if ctx.is_null() {
        return Err(NftFailure::Failed("nft_ctx_new returned no context".into()));
    }
    let context = Context { api, ctx };
    // SAFETY: `ctx` is the live context made above, used by this thread alone (under `CALLS`)
    // until `Context` frees it; the flag and buffer calls take only the context.
    let (out_ok, err_ok) = unsafe {
        (api.output_set_flags)(ctx, OUTPUT_JSON | OUTPUT_NUMERIC_PROTO);
        ((api.buffer_output)(ctx), (api.buffer_error)(ctx))
    };
    if out_ok != 0 || err_ok != 0 {
        return Err(NftFailure::Failed(
            "libnftables could not buffer its output".into(),
        ));
    }
    // SAFETY: `ctx` as above; `input` is a NUL-terminated string that outlives the call.
    let rc = unsafe { (api.run_cmd_from_buffer)(ctx, input.as_ptr()) };
    if rc == 0 {
        Ok(context.output())
    } else {
        let error = context.error();
        Err(NftFailure::Failed(if error.trim().is_empty() {
            format!("libnftables returned {rc}")
        } else {
            error
        }))
    }
}

/// One libnftables context, freed on drop.
struct Context {
    api: &'static Api,
    ctx: *mut c_void,
}

impl Context {
    fn output(&self) -> String {
        // SAFETY: the context is live and buffers its output (set in `run`); the returned
        // pointer is NULL or a NUL-terminated string owned by the context, copied before the
        // context is freed.
        unsafe { copy((self.api.get_output_buffer)(self.ctx)) }
    }

    fn error(&self) -> String {
        // SAFETY: as in `output`, for the error buffer.
        unsafe { copy((self.api.get_error_buffer)(self.ctx)) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context came from `nft_ctx_new`, is freed exactly once, here, and no
        // pointer into it outlives this (buffers are copied first).
        unsafe { (self.api.ctx_free)(self.ctx) }
    }
}

/// A copy of a C string the library owns; empty for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the duration of the call.
unsafe fn copy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
