//! Helpers the unit tests share.

use std::path::Path;

/// The one environment variable that rewrites golden files.
pub(crate) const BLESS: &str = "KPROXY_BLESS";

/// Compare `got` with the golden file at `path` (relative to the crate's
/// root). With `KPROXY_BLESS=1` the file is written instead, to be reviewed
/// in the diff before it is committed. Returns the mismatch, readable, so a
/// table of cases can report every failure at once.
pub(crate) fn golden(path: &str, got: &str) -> Result<(), String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os(BLESS).is_some() {
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&full, got).unwrap();
        return Ok(());
    }
    let want = std::fs::read_to_string(&full)
        .map_err(|e| format!("{path}: {e} (run with {BLESS}=1 to create it)"))?;
    if want == got {
        return Ok(());
    }
    Err(format!(
        "{path} differs:\n{}",
        pretty_assertions::StrComparison::new(&want, got)
    ))
}

/// The one environment variable that sizes the generated-input runs: each
/// target's case count is multiplied by it (`make fuzz` sets it; unset, a
/// target runs its bounded count, a few seconds in a debug build).
pub(crate) const FUZZ_SCALE: &str = "KPROXY_FUZZ_SCALE";

/// How long one generated input may take before the run counts it as an
/// endless loop: generous, a debug build on a busy machine.
const FUZZ_CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Run `test` on `base_cases` × `KPROXY_FUZZ_SCALE` inputs drawn from
/// `strategy`; a failure (a panic or a failed property) is shrunk and
/// reported with its smallest input. An input still running after
/// `FUZZ_CASE_LIMIT` aborts the process, printing it. Returns (and prints)
/// how many inputs were tried.
pub(crate) fn fuzz<S>(
    name: &str,
    base_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) -> u64
where
    S: proptest::strategy::Strategy,
    S::Value: Clone + std::fmt::Debug + Send + 'static,
{
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let scale = std::env::var(FUZZ_SCALE)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let config = proptest::test_runner::Config {
        cases: base_cases.saturating_mul(scale),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Default::default()
    };
    // The input being tried, and since when.
    type Current<V> = Arc<Mutex<Option<(Instant, V)>>>;
    let current: Current<S::Value> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done, name) = (current.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let guard = current.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((start, input)) = guard.as_ref()
                    && start.elapsed() > FUZZ_CASE_LIMIT
                {
                    eprintln!(
                        "fuzz {name}: an input ran for over {FUZZ_CASE_LIMIT:?} \
                         (an endless loop?): {input:?}"
                    );
                    std::process::abort();
                }
            }
        })
    };
    let tried = AtomicU64::new(0);
    let started = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |input| {
        tried.fetch_add(1, Ordering::Relaxed);
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), input.clone()));
        let r = test(input);
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    });
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let tried = tried.into_inner();
    eprintln!(
        "fuzz {name}: {tried} inputs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    tried
}

/// One change to a valid message, for decoders fed mutated replies.
/// Offsets are taken modulo the message's length.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    /// XOR one byte.
    Flip(usize, u8),
    /// Overwrite a 16-bit field at a 4-byte boundary (an attribute's length
    /// or type): 0, 0xffff, 4, or anything.
    Set16(usize, u16),
    /// Overwrite a 32-bit field at a 4-byte boundary (a netlink header's length).
    Set32(usize, u32),
    /// Cut the message here.
    Truncate(usize),
    /// Insert bytes here.
    Insert(usize, Vec<u8>),
    /// Append the message to itself (a second message in the datagram).
    Repeat,
}

impl Mutation {
    pub(crate) fn apply(&self, b: &mut Vec<u8>) {
        let at = |i: usize, b: &Vec<u8>| if b.is_empty() { 0 } else { i % b.len() };
        match self {
            Mutation::Flip(i, x) if !b.is_empty() => {
                let i = at(*i, b);
                b[i] ^= x;
            }
            Mutation::Set16(i, v) => {
                let i = at(*i, b) & !3;
                if let Some(s) = b.get_mut(i..i + 2) {
                    s.copy_from_slice(&v.to_ne_bytes());
                }
            }
            Mutation::Set32(i, v) => {
                let i = at(*i, b) & !3;
                if let Some(s) = b.get_mut(i..i + 4) {
                    s.copy_from_slice(&v.to_ne_bytes());
                }
            }
            Mutation::Truncate(i) => {
                let i = at(*i, b);
                b.truncate(i);
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, b);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Repeat => {
                let copy = b.clone();
                b.extend(copy);
            }
            Mutation::Flip(..) => {}
        }
    }
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    let u16s = prop_oneof![Just(0u16), Just(u16::MAX), Just(4), Just(3), any::<u16>()];
    let u32s = prop_oneof![Just(0u32), Just(u32::MAX), Just(16), Just(15), any::<u32>()];
    prop_oneof![
        3 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        3 => (any::<usize>(), u16s).prop_map(|(i, v)| Mutation::Set16(i, v)),
        1 => (prop_oneof![Just(0usize), any::<usize>()], u32s)
            .prop_map(|(i, v)| Mutation::Set32(i, v)),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => Just(Mutation::Repeat),
    ]
}

/// One of `seeds` (valid messages) with one to five mutations applied.
pub(crate) fn mutated(seeds: Vec<Vec<u8>>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    assert!(!seeds.is_empty());
    (0..seeds.len(), proptest::collection::vec(mutation(), 1..6)).prop_map(move |(i, ms)| {
        let mut b = seeds[i].clone();
        for m in &ms {
            m.apply(&mut b);
        }
        b
    })
}

/// Random bytes, or a mutated valid message: what a decoder is fed.
pub(crate) fn replies(seeds: Vec<Vec<u8>>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        3 => mutated(seeds),
    ]
}
