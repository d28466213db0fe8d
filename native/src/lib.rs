//! replaywatch's per-record path in native code.
//!
//! Each function here has a pure-Python twin that stays the reference: property tests
//! (`tests/unit/test_native.py`) hold the two equal on every input class the engine
//! accepts. Whatever this code does not take as the reference would (a key that is not
//! a string, more than 64 ignore patterns, a value the Avro schema does not describe)
//! raises `Mismatch`, and the caller runs the Python twin instead: the answer, and any
//! error, is then the reference's own.
//!
//! - `Automaton`: the ignore rules' automaton (`compare/ignore.py`'s `Matcher`);
//! - `strip`: `compare/structure.py`'s `_strip` (usage keys out, ignored paths out, the
//!   usage numbers found, in one walk);
//! - `drop_ignored`: `compare/structure.py`'s `_drop_ignored`;
//! - `Document` and `prepare`: a JSON text read natively (orjson's `loads` is the
//!   reference) and everything `compare/engine.py`'s `prepare` makes of it: the
//!   structure's canonical bytes, the compact snapshot, the usage numbers, the ignore
//!   rules matched, the attestation ids, and the tool events' forms, with orjson's
//!   `dumps` as the reference for every byte written;
//! - `Avro`: Avro binary of a record and back (`codec.py`'s fastavro writer and reader
//!   are the reference).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Maps and sets keyed by a record's strings: foldhash, seeded per process (std's
/// SipHash cost most of a walk's time; the automaton bounds each state's moves anyway).
type Fast = foldhash::fast::RandomState;
use std::fmt;

use apache_avro::schema::Schema;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyString, PyTuple};

create_exception!(_native, Mismatch, PyValueError, "An input the native path leaves to the Python reference.");

fn mismatch(what: &str) -> PyErr {
    Mismatch::new_err(what.to_string())
}

// ---------------------------------------------------------------------------------------
// The ignore rules' automaton
// ---------------------------------------------------------------------------------------

const KEY: i64 = 0;
const ANY_KEY: i64 = 1;
const INDEX: i64 = 2;
const ANY_ITEM: i64 = 3;
const DEEP: i64 = 4;
/// Moves remembered per state (a record's keys cannot grow the automaton without bound).
const MOVES: usize = 512;

#[derive(Clone, PartialEq)]
enum Token {
    Key(String),
    AnyKey,
    Index(i64),
    AnyItem,
    Deep,
}

type States = Vec<(u32, u32)>;

/// `ignore.Matcher` (not `through`): each set of states met is numbered once, and each
/// move from it is worked out once and remembered.
#[pyclass]
struct Automaton {
    patterns: Vec<Vec<Token>>,
    sets: Vec<States>,
    ids: HashMap<States, i32, Fast>,
    keys: Vec<HashMap<String, (u64, i32), Fast>>,
    items: Vec<HashMap<i64, (u64, i32), Fast>>,
    indexed: Vec<bool>,
    #[pyo3(get)]
    start: i32,
}

impl Automaton {
    fn closure(&self, states: &mut States) {
        let mut todo: Vec<(u32, u32)> = states.clone();
        while let Some((p, i)) = todo.pop() {
            let pat = &self.patterns[p as usize];
            if (i as usize) < pat.len() && pat[i as usize] == Token::Deep && !states.contains(&(p, i + 1)) {
                states.push((p, i + 1));
                todo.push((p, i + 1));
            }
        }
        states.sort_unstable();
        states.dedup();
    }

    fn intern(&mut self, states: States) -> i32 {
        if let Some(&n) = self.ids.get(&states) {
            return n;
        }
        let n = self.sets.len() as i32;
        let indexed = states.iter().any(|&(p, i)| {
            let pat = &self.patterns[p as usize];
            (i as usize) < pat.len() && matches!(pat[i as usize], Token::Index(_))
        });
        self.ids.insert(states.clone(), n);
        self.sets.push(states);
        self.keys.push(HashMap::default());
        self.items.push(HashMap::default());
        self.indexed.push(indexed);
        n
    }

    /// `ignore.step` from state `state` by a key or an index, its result interned.
    fn step(&mut self, state: i32, key: Option<&str>, index: i64) -> (u64, i32) {
        let mut next: States = Vec::new();
        for &(p, i) in &self.sets[state as usize] {
            let pat = &self.patterns[p as usize];
            if i as usize >= pat.len() {
                continue;
            }
            let ok = match (&pat[i as usize], key) {
                (Token::Deep, _) => {
                    next.push((p, i));
                    continue;
                }
                (Token::AnyKey, Some(_)) => true,
                (Token::Key(k), Some(key)) => k == key,
                (Token::AnyItem, None) => true,
                (Token::Index(n), None) => *n == index,
                _ => false,
            };
            if ok {
                next.push((p, i + 1));
            }
        }
        if next.is_empty() {
            return (0, -1);
        }
        self.closure(&mut next);
        let mut done = 0u64;
        for &(p, i) in &next {
            if i as usize == self.patterns[p as usize].len() {
                done |= 1 << p;
            }
        }
        if done != 0 {
            return (done, -1);
        }
        (0, self.intern(next))
    }

    fn key(&mut self, state: i32, key: &str) -> (u64, i32) {
        if let Some(&hit) = self.keys[state as usize].get(key) {
            return hit;
        }
        let hit = self.step(state, Some(key), 0);
        let moves = &mut self.keys[state as usize];
        if moves.len() < MOVES {
            moves.insert(key.to_owned(), hit);
        }
        hit
    }

    fn item(&mut self, state: i32, index: usize) -> (u64, i32) {
        let slot = if self.indexed[state as usize] { index as i64 } else { -1 };
        if let Some(&hit) = self.items[state as usize].get(&slot) {
            return hit;
        }
        let hit = self.step(state, None, index as i64);
        let moves = &mut self.items[state as usize];
        if moves.len() < MOVES {
            moves.insert(slot, hit);
        }
        hit
    }
}

#[pymethods]
impl Automaton {
    /// From `ignore.Pattern`s: tuples of `(kind, argument)` tokens.
    #[new]
    fn new(patterns: &Bound<'_, PyTuple>) -> PyResult<Self> {
        if patterns.len() > 64 {
            return Err(mismatch("more than 64 ignore patterns"));
        }
        let mut parsed: Vec<Vec<Token>> = Vec::with_capacity(patterns.len());
        for pattern in patterns.iter() {
            let mut tokens = Vec::new();
            for token in pattern.downcast::<PyTuple>()?.iter() {
                let (kind, arg): (i64, Bound<'_, PyAny>) = token.extract()?;
                tokens.push(match kind {
                    KEY => Token::Key(arg.extract::<String>()?),
                    ANY_KEY => Token::AnyKey,
                    INDEX => Token::Index(arg.extract::<i64>().map_err(|_| mismatch("an index beyond 64 bits"))?),
                    ANY_ITEM => Token::AnyItem,
                    DEEP => Token::Deep,
                    _ => return Err(mismatch("an unknown token kind")),
                });
            }
            parsed.push(tokens);
        }
        let mut automaton = Automaton {
            patterns: parsed,
            sets: Vec::new(),
            ids: HashMap::default(),
            keys: Vec::new(),
            items: Vec::new(),
            indexed: Vec::new(),
            start: -1,
        };
        if !automaton.patterns.is_empty() {
            let mut first: States = (0..automaton.patterns.len() as u32).map(|p| (p, 0)).collect();
            automaton.closure(&mut first);
            automaton.start = automaton.intern(first);
        }
        Ok(automaton)
    }
}

// ---------------------------------------------------------------------------------------
// The snapshot walks
// ---------------------------------------------------------------------------------------

/// `usage.UsagePreset` as the walk reads it.
#[pyclass]
struct Usage {
    token_keys: Vec<Py<PyString>>,
    cost_keys: Vec<Py<PyString>>,
    groups: Vec<Vec<Py<PyString>>>,
    part_keys: Vec<Py<PyString>>,
    strip: Py<PyFrozenSet>,
    strip_top: Py<PyFrozenSet>,
    /// The same keys as Rust strings, for the walk over a `Document`.
    keys: UsageKeys,
}

struct UsageKeys {
    token: Vec<String>,
    cost: Vec<String>,
    groups: Vec<Vec<String>>,
    parts: HashSet<String, Fast>,
    strip: HashSet<String, Fast>,
    strip_top: HashSet<String, Fast>,
}

fn strings(py: Python<'_>, keys: &[Py<PyString>]) -> PyResult<Vec<String>> {
    keys.iter().map(|k| Ok(k.bind(py).to_cow()?.into_owned())).collect()
}

fn string_set(set: &Bound<'_, PyFrozenSet>) -> PyResult<HashSet<String, Fast>> {
    set.iter().map(|k| Ok(k.downcast_exact::<PyString>()?.to_cow()?.into_owned())).collect()
}

#[pymethods]
impl Usage {
    /// `strip_top`: `strip` and the top-level keys left out besides (the attestation ids).
    #[new]
    fn new(
        py: Python<'_>,
        token_keys: Vec<Py<PyString>>,
        cost_keys: Vec<Py<PyString>>,
        groups: Vec<Vec<Py<PyString>>>,
        part_keys: Vec<Py<PyString>>,
        strip: Py<PyFrozenSet>,
        strip_top: Py<PyFrozenSet>,
    ) -> PyResult<Self> {
        let keys = UsageKeys {
            token: strings(py, &token_keys)?,
            cost: strings(py, &cost_keys)?,
            groups: groups.iter().map(|g| strings(py, g)).collect::<PyResult<_>>()?,
            parts: strings(py, &part_keys)?.into_iter().collect(),
            strip: string_set(strip.bind(py))?,
            strip_top: string_set(strip_top.bind(py))?,
        };
        Ok(Usage { token_keys, cost_keys, groups, part_keys, strip, strip_top, keys })
    }
}

/// `usage.as_number`: a JSON number as a float (an int beyond a double: none), else none.
fn as_number(value: &Bound<'_, PyAny>) -> Option<f64> {
    if value.is_exact_instance_of::<PyFloat>() || value.is_exact_instance_of::<PyInt>() {
        return value.extract::<f64>().ok();
    }
    None
}

/// `structure._own`: the first number under one of `keys`.
fn own(py: Python<'_>, d: &Bound<'_, PyDict>, keys: &[Py<PyString>]) -> PyResult<Option<f64>> {
    for key in keys {
        if let Some(v) = d.get_item(key.bind(py))? {
            if let Some(n) = as_number(&v) {
                return Ok(Some(n));
            }
        }
    }
    Ok(None)
}

enum Slot<'py> {
    Root,
    Dropped,
    InDict(Bound<'py, PyDict>, Bound<'py, PyAny>),
    InList(Bound<'py, PyList>, usize),
}

impl<'py> Slot<'py> {
    fn put(&self, root: &mut Option<Bound<'py, PyAny>>, value: Bound<'py, PyAny>) -> PyResult<()> {
        match self {
            Slot::Root => *root = Some(value),
            Slot::Dropped => {}
            Slot::InDict(d, k) => d.set_item(k, value)?,
            Slot::InList(l, i) => l.set_item(*i, value)?,
        }
        Ok(())
    }
}

fn is_container(v: &Bound<'_, PyAny>) -> bool {
    v.is_exact_instance_of::<PyDict>() || v.is_exact_instance_of::<PyList>()
}

fn key_str<'a>(k: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, str>> {
    match k.downcast_exact::<PyString>() {
        Ok(s) => s.to_cow(),
        Err(_) => Err(mismatch("an object key that is not a string")),
    }
}

/// `structure._strip`: (structure, tokens, cost, patterns matched, token parts found in
/// group order, units of work). The caller adds the parts up when no total was found,
/// and charges the units to the record's budget.
#[pyfunction]
#[pyo3(signature = (snapshot, usage, automaton=None))]
#[allow(clippy::type_complexity)]
fn strip<'py>(
    py: Python<'py>,
    snapshot: Bound<'py, PyAny>,
    usage: PyRef<'py, Usage>,
    automaton: Option<Bound<'py, Automaton>>,
) -> PyResult<(Bound<'py, PyAny>, Option<f64>, Option<f64>, u64, Vec<f64>, u64)> {
    let mut auto = automaton.as_ref().map(|a| a.borrow_mut());
    let start = auto.as_ref().map_or(-1, |a| a.start);
    let strip = usage.strip.bind(py);
    let strip_top = usage.strip_top.bind(py);
    let groups = &usage.groups;
    let mut parts: Vec<Option<f64>> = vec![None; groups.len()];
    let mut missing_parts = groups.len();
    let mut tokens: Option<f64> = None;
    let mut cost: Option<f64> = None;
    let mut matched = 0u64;
    let mut units = 0u64;
    let mut root: Option<Bound<'py, PyAny>> = None;
    let mut stack: Vec<(Bound<'py, PyAny>, Slot<'py>, i32)> = vec![(snapshot.clone(), Slot::Root, start)];
    while let Some((value, slot, here)) = stack.pop() {
        if let Ok(d) = value.downcast_exact::<PyDict>() {
            units += d.len() as u64 + 1;
            if tokens.is_none() {
                tokens = own(py, d, &usage.token_keys)?;
                if missing_parts > 0 && tokens.is_none() {
                    let mut any_part = false;
                    for k in &usage.part_keys {
                        if d.contains(k.bind(py))? {
                            any_part = true;
                            break;
                        }
                    }
                    if any_part {
                        for (g, group) in groups.iter().enumerate() {
                            if parts[g].is_none() {
                                if let Some(n) = own(py, d, group)? {
                                    parts[g] = Some(n);
                                    missing_parts -= 1;
                                }
                            }
                        }
                    }
                }
            }
            if cost.is_none() {
                cost = own(py, d, &usage.cost_keys)?;
            }
            if let Slot::Dropped = slot {
                if tokens.is_none() || cost.is_none() {
                    let values: Vec<Bound<'py, PyAny>> = d.values().iter().collect();
                    for v in values.into_iter().rev() {
                        if is_container(&v) {
                            stack.push((v, Slot::Dropped, -1));
                        }
                    }
                }
                continue;
            }
            let drop = if value.is(&snapshot) { strip_top } else { strip };
            let copy = PyDict::new(py);
            slot.put(&mut root, copy.clone().into_any())?;
            let items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = d.iter().collect();
            for (k, v) in items.into_iter().rev() {
                let mut sub = -1;
                let dropped = drop.contains(&k)?;
                if here >= 0 && !dropped {
                    let (done, next) = auto.as_mut().expect("a state without an automaton").key(here, &key_str(&k)?);
                    sub = next;
                    if done != 0 {
                        matched |= done;
                        if is_container(&v) {
                            stack.push((v, Slot::Dropped, -1));
                        }
                        continue;
                    }
                }
                if is_container(&v) {
                    let to = if dropped { Slot::Dropped } else { Slot::InDict(copy.clone(), k) };
                    stack.push((v, to, sub));
                } else if !dropped {
                    copy.set_item(k, v)?;
                }
            }
        } else if let Ok(l) = value.downcast_exact::<PyList>() {
            units += l.len() as u64 + 1;
            if let Slot::Dropped = slot {
                if tokens.is_none() || cost.is_none() {
                    let values: Vec<Bound<'py, PyAny>> = l.iter().collect();
                    for v in values.into_iter().rev() {
                        if is_container(&v) {
                            stack.push((v, Slot::Dropped, -1));
                        }
                    }
                }
                continue;
            }
            let values: Vec<Bound<'py, PyAny>> = l.iter().collect();
            let items = PyList::new(py, &values)?;
            slot.put(&mut root, items.clone().into_any())?;
            if here >= 0 {
                let auto = auto.as_mut().expect("a state without an automaton");
                for (i, v) in values.into_iter().enumerate().rev() {
                    let (done, sub) = auto.item(here, i);
                    if done != 0 {
                        matched |= done;
                        items.set_item(i, py.None())?;
                        if is_container(&v) {
                            stack.push((v, Slot::Dropped, -1));
                        }
                    } else if is_container(&v) {
                        stack.push((v, Slot::InList(items.clone(), i), sub));
                    }
                }
                continue;
            }
            for (i, v) in values.into_iter().enumerate().rev() {
                if is_container(&v) {
                    stack.push((v, Slot::InList(items.clone(), i), -1));
                }
            }
        } else {
            slot.put(&mut root, value)?;
        }
    }
    let found: Vec<f64> = if tokens.is_none() { parts.into_iter().flatten().collect() } else { Vec::new() };
    Ok((root.unwrap_or_else(|| py.None().into_bound(py)), tokens, cost, matched, found, units))
}

/// `structure.drop_ignored` (the automaton has a start state): (copy, patterns matched,
/// units of work).
#[pyfunction]
fn drop_ignored<'py>(
    py: Python<'py>,
    value: Bound<'py, PyAny>,
    automaton: Bound<'py, Automaton>,
) -> PyResult<(Bound<'py, PyAny>, u64, u64)> {
    let mut auto = automaton.borrow_mut();
    let mut matched = 0u64;
    let mut units = 0u64;
    let mut root: Option<Bound<'py, PyAny>> = Some(value.clone());
    let mut stack: Vec<(Bound<'py, PyAny>, Slot<'py>, i32)> = vec![(value, Slot::Root, auto.start)];
    while let Some((node, slot, here)) = stack.pop() {
        if let Ok(d) = node.downcast_exact::<PyDict>() {
            units += d.len() as u64 + 1;
            let out = PyDict::new(py);
            for (k, v) in d.iter() {
                let (done, sub) = auto.key(here, &key_str(&k)?);
                if done != 0 {
                    matched |= done;
                } else {
                    out.set_item(&k, &v)?;
                    if sub >= 0 {
                        stack.push((v, Slot::InDict(out.clone(), k), sub));
                    }
                }
            }
            slot.put(&mut root, out.into_any())?;
        } else if let Ok(l) = node.downcast_exact::<PyList>() {
            units += l.len() as u64 + 1;
            let values: Vec<Bound<'py, PyAny>> = l.iter().collect();
            let items = PyList::new(py, &values)?;
            for (i, v) in values.into_iter().enumerate() {
                let (done, sub) = auto.item(here, i);
                if done != 0 {
                    matched |= done;
                    items.set_item(i, py.None())?;
                } else if sub >= 0 {
                    stack.push((v, Slot::InList(items.clone(), i), sub));
                }
            }
            slot.put(&mut root, items.into_any())?;
        }
    }
    Ok((root.unwrap_or_else(|| py.None().into_bound(py)), matched, units))
}

// ---------------------------------------------------------------------------------------
// JSON documents read natively, and what `prepare` makes of them
// ---------------------------------------------------------------------------------------

/// A JSON value as orjson's `loads` gives it: integers within 64 bits (signed, or
/// unsigned above `i64::MAX`), every other number a double; an object's members in
/// their order, a repeated key keeping its first place and its last value.
enum Node<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    fn is_container(&self) -> bool {
        matches!(self, Node::Arr(_) | Node::Obj(_))
    }

    /// `usage.as_number`: a number as a double (a boolean is none).
    fn number(&self) -> Option<f64> {
        match self {
            Node::Int(n) => Some(*n as f64),
            Node::UInt(n) => Some(*n as f64),
            Node::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// Members past which a repeated key is looked up in an index, not by scanning.
const SCAN: usize = 16;

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(if v <= i64::MAX as u64 { Node::Int(v as i64) } else { Node::UInt(v) })
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node<'de>, E> {
        if v == 0.0 && v.is_sign_negative() {
            // serde_json reads `-0` and `-0.0` alike; orjson reads the first as the integer 0
            return Err(E::custom("a negative zero: left to orjson"));
        }
        Ok(Node::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        let mut index: Option<HashMap<Cow<'de, str>, usize, Fast>> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Node<'de>>()?;
            let at = match &index {
                Some(ix) => ix.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match at {
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(ix) = index.as_mut() {
                        ix.insert(key.clone(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() > SCAN {
                        index = Some(members.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect());
                    }
                }
            }
        }
        Ok(Node::Obj(members))
    }
}

impl<'de> serde::Deserialize<'de> for Node<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// An object's key, borrowed from the text unless it holds an escape.
struct Key<'a>(Cow<'a, str>);

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

/// The bytes a JSON string escapes: `"`, `\\` and the control characters.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The first byte at or after `from` that a JSON string escapes: eight bytes at a time
/// while none of them is one (a control character, `"` or `\\`).
fn next_escaped(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= bytes.len() {
        let x = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"));
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let quote = x ^ (ONES * b'"' as u64);
        let slash = x ^ (ONES * b'\\' as u64);
        let found = below | (quote.wrapping_sub(ONES) & !quote & HIGH) | (slash.wrapping_sub(ONES) & !slash & HIGH);
        if found != 0 {
            break;
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| ESCAPED[b as usize]).map(|at| i + at)
}

/// orjson's `dumps` of a string: `"`, `\\` and the control characters escaped (the
/// short forms where JSON has them, else `\u00xx`), everything else as it is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escaped(bytes, start) {
        out.extend_from_slice(&bytes[start..i]);
        let b = bytes[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_scalar(out: &mut Vec<u8>, node: &Node<'_>) {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Node::UInt(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        // orjson writes doubles with zmij; a parsed double is finite
        Node::Float(f) => out.extend_from_slice(zmij::Buffer::new().format_finite(*f).as_bytes()),
        Node::Str(s) => write_str(out, s),
        Node::Arr(_) | Node::Obj(_) => unreachable!("a container is not a scalar"),
    }
}

/// A JSON array of `items`, each written by `each`.
fn write_items<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// A JSON object of `members` (`sorted`: keys by their code points, as orjson's
/// `OPT_SORT_KEYS`), each value written by `each`.
fn write_members<T>(
    out: &mut Vec<u8>,
    mut members: Vec<(&str, &T)>,
    sorted: bool,
    mut each: impl FnMut(&mut Vec<u8>, &T),
) {
    if sorted {
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        each(out, v);
    }
    out.push(b'}');
}

/// orjson's `dumps(value)` (`sorted`: with `OPT_SORT_KEYS`, keys by their code points).
fn write_node(out: &mut Vec<u8>, node: &Node<'_>, sorted: bool) {
    match node {
        Node::Arr(items) => write_items(out, items, |o, n| write_node(o, n, sorted)),
        Node::Obj(members) => {
            let members = members.iter().map(|(k, v)| (k.as_ref(), v)).collect();
            write_members(out, members, sorted, |o, n| write_node(o, n, sorted))
        }
        scalar => write_scalar(out, scalar),
    }
}

/// The copy of a document that is compared: members and items kept, or an item an
/// ignore rule replaced by null.
enum Kept<'a> {
    Same(&'a Node<'a>),
    Null,
    Arr(Vec<Kept<'a>>),
    Obj(Vec<(&'a str, Kept<'a>)>),
}

/// orjson's `dumps(copy, option=OPT_SORT_KEYS)`.
fn write_kept(out: &mut Vec<u8>, kept: &Kept<'_>) {
    match kept {
        Kept::Same(node) => write_node(out, node, true),
        Kept::Null => out.extend_from_slice(b"null"),
        Kept::Arr(items) => write_items(out, items, write_kept),
        Kept::Obj(members) => write_members(out, members.iter().map(|(k, v)| (*k, v)).collect(), true, write_kept),
    }
}

fn node_value<'py>(py: Python<'py>, node: &Node<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match node {
        Node::Null => py.None().into_bound(py),
        Node::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Node::Int(n) => n.into_pyobject(py)?.into_any(),
        Node::UInt(n) => n.into_pyobject(py)?.into_any(),
        Node::Float(f) => PyFloat::new(py, *f).into_any(),
        Node::Str(s) => PyString::new(py, s).into_any(),
        Node::Arr(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(node_value(py, item)?)?;
            }
            list.into_any()
        }
        Node::Obj(members) => {
            let dict = PyDict::new(py);
            for (k, v) in members {
                dict.set_item(PyString::new(py, k), node_value(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A JSON object or array read natively from its text (`document`).
#[pyclass(frozen)]
struct Document {
    /// Borrows its strings from `text` (dropped first: fields drop in order).
    root: Node<'static>,
    #[allow(dead_code)] // kept for `root` to borrow from
    text: Box<str>,
}

#[pymethods]
impl Document {
    /// The value as orjson's `loads` gives it.
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        node_value(py, &self.root)
    }

    /// The UTF-8 bytes of the strings in a top-level `attestation_ids` array.
    fn attestation_bytes(&self) -> usize {
        match attestation_node(&self.root) {
            Some(items) => items.iter().map(|i| if let Node::Str(s) = i { s.len() } else { 0 }).sum(),
            None => 0,
        }
    }
}

const ATTESTATION_KEY: &str = "attestation_ids";

fn attestation_node<'n>(root: &'n Node<'_>) -> Option<&'n Vec<Node<'n>>> {
    if let Node::Obj(members) = root {
        if let Some((_, Node::Arr(items))) = members.iter().find(|(k, _)| k == ATTESTATION_KEY) {
            return Some(items);
        }
    }
    None
}

/// The document of a JSON text whose value is an object or an array; any other text
/// (a scalar, or one that does not parse, or nests deeper than the reader goes) raises
/// `Mismatch`, and the caller reads it with orjson, which says what is wrong.
#[pyfunction]
fn document(text: &str) -> PyResult<Document> {
    let text: Box<str> = text.into();
    // SAFETY: `root` borrows from the heap buffer of `text`, which the Document owns,
    // never changes and drops after `root`; moving the Box does not move the buffer.
    let view: &'static str = unsafe { &*(text.as_ref() as *const str) };
    match serde_json::from_str::<Node<'static>>(view) {
        Ok(root) if root.is_container() => Ok(Document { root, text }),
        Ok(_) => Err(mismatch("a JSON scalar")),
        Err(_) => Err(mismatch("JSON the native reader does not take")),
    }
}

/// `structure._strip` over a document: the usage numbers, the patterns matched, the
/// units of work, and the copy that is compared.
struct Walk<'u, 'a> {
    keys: &'u UsageKeys,
    auto: Option<PyRefMut<'a, Automaton>>,
    tokens: Option<f64>,
    cost: Option<f64>,
    parts: Vec<Option<f64>>,
    missing_parts: usize,
    matched: u64,
    units: u64,
}

fn own_number(members: &[(Cow<'_, str>, Node<'_>)], keys: &[String]) -> Option<f64> {
    for key in keys {
        if let Some((_, v)) = members.iter().find(|(k, _)| k == key) {
            if let Some(n) = v.number() {
                return Some(n);
            }
        }
    }
    None
}

impl Walk<'_, '_> {
    /// The usage numbers an object holds as its own members.
    fn search(&mut self, members: &[(Cow<'_, str>, Node<'_>)]) {
        if self.tokens.is_none() {
            self.tokens = own_number(members, &self.keys.token);
            if self.missing_parts > 0
                && self.tokens.is_none()
                && members.iter().any(|(k, _)| self.keys.parts.contains(k.as_ref()))
            {
                for (g, group) in self.keys.groups.iter().enumerate() {
                    if self.parts[g].is_none() {
                        if let Some(n) = own_number(members, group) {
                            self.parts[g] = Some(n);
                            self.missing_parts -= 1;
                        }
                    }
                }
            }
        }
        if self.cost.is_none() {
            self.cost = own_number(members, &self.keys.cost);
        }
    }

    /// A subtree left out of the copy: only searched for usage numbers.
    fn dropped(&mut self, node: &Node<'_>) {
        match node {
            Node::Obj(members) => {
                self.units += members.len() as u64 + 1;
                self.search(members);
                if self.tokens.is_none() || self.cost.is_none() {
                    for (_, v) in members {
                        if v.is_container() {
                            self.dropped(v);
                        }
                    }
                }
            }
            Node::Arr(items) => {
                self.units += items.len() as u64 + 1;
                if self.tokens.is_none() || self.cost.is_none() {
                    for v in items {
                        if v.is_container() {
                            self.dropped(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn key(&mut self, here: i32, key: &str) -> (u64, i32) {
        self.auto.as_mut().expect("a state without an automaton").key(here, key)
    }

    fn item(&mut self, here: i32, index: usize) -> (u64, i32) {
        self.auto.as_mut().expect("a state without an automaton").item(here, index)
    }

    /// A subtree kept in the copy (`top`: the snapshot itself).
    fn kept<'n>(&mut self, node: &'n Node<'n>, here: i32, top: bool) -> Kept<'n> {
        match node {
            Node::Obj(members) => {
                self.units += members.len() as u64 + 1;
                self.search(members);
                let keys = self.keys;
                let drop = if top { &keys.strip_top } else { &keys.strip };
                let mut copy = Vec::with_capacity(members.len());
                for (k, v) in members {
                    let dropped = drop.contains(k.as_ref());
                    let mut sub = -1;
                    if here >= 0 && !dropped {
                        let (done, next) = self.key(here, k);
                        sub = next;
                        if done != 0 {
                            self.matched |= done;
                            self.dropped(v);
                            continue;
                        }
                    }
                    if dropped {
                        self.dropped(v);
                    } else if v.is_container() {
                        copy.push((k.as_ref(), self.kept(v, sub, false)));
                    } else {
                        copy.push((k.as_ref(), Kept::Same(v)));
                    }
                }
                Kept::Obj(copy)
            }
            Node::Arr(items) => {
                self.units += items.len() as u64 + 1;
                let mut copy = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    if here >= 0 {
                        let (done, sub) = self.item(here, i);
                        if done != 0 {
                            self.matched |= done;
                            self.dropped(v);
                            copy.push(Kept::Null);
                            continue;
                        }
                        copy.push(if v.is_container() { self.kept(v, sub, false) } else { Kept::Same(v) });
                    } else {
                        copy.push(if v.is_container() { self.kept(v, -1, false) } else { Kept::Same(v) });
                    }
                }
                Kept::Arr(copy)
            }
            scalar => Kept::Same(scalar),
        }
    }
}

/// `structure._drop_ignored` over a document: the copy, the patterns matched, the units.
fn drop_node<'n>(auto: &mut Automaton, node: &'n Node<'n>, here: i32, matched: &mut u64, units: &mut u64) -> Kept<'n> {
    match node {
        Node::Obj(members) => {
            *units += members.len() as u64 + 1;
            let mut copy = Vec::with_capacity(members.len());
            for (k, v) in members {
                let (done, sub) = auto.key(here, k);
                if done != 0 {
                    *matched |= done;
                } else if sub >= 0 {
                    copy.push((k.as_ref(), drop_node(auto, v, sub, matched, units)));
                } else {
                    copy.push((k.as_ref(), Kept::Same(v)));
                }
            }
            Kept::Obj(copy)
        }
        Node::Arr(items) => {
            *units += items.len() as u64 + 1;
            let mut copy = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let (done, sub) = auto.item(here, i);
                if done != 0 {
                    *matched |= done;
                    copy.push(Kept::Null);
                } else if sub >= 0 {
                    copy.push(drop_node(auto, v, sub, matched, units));
                } else {
                    copy.push(Kept::Same(v));
                }
            }
            Kept::Arr(copy)
        }
        scalar => Kept::Same(scalar),
    }
}

fn bytes_of<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, data)
}

/// What `engine.prepare` makes of a snapshot (and its tool events) read as documents:
/// (the structure's canonical bytes, the compact snapshot, tokens, cost, output patterns
/// matched, the token parts found in group order, the attestation ids (distinct,
/// sorted), the tool events' compared canonical bytes, their stored compact bytes, tool
/// patterns matched, units of work to charge). Without tool rules the tool events'
/// canonical bytes serve as both.
#[pyfunction]
#[pyo3(signature = (snapshot, usage, automaton=None, tools=None, tools_automaton=None))]
#[allow(clippy::type_complexity)]
fn prepare<'py>(
    py: Python<'py>,
    snapshot: PyRef<'py, Document>,
    usage: PyRef<'py, Usage>,
    automaton: Option<Bound<'py, Automaton>>,
    tools: Option<PyRef<'py, Document>>,
    tools_automaton: Option<Bound<'py, Automaton>>,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Option<f64>,
    Option<f64>,
    u64,
    Vec<f64>,
    Vec<String>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    u64,
    u64,
)> {
    let keys = &usage.keys;
    let auto = automaton.as_ref().map(|a| a.borrow_mut());
    let start = auto.as_ref().map_or(-1, |a| a.start);
    let mut walk = Walk {
        keys,
        auto,
        tokens: None,
        cost: None,
        parts: vec![None; keys.groups.len()],
        missing_parts: keys.groups.len(),
        matched: 0,
        units: 0,
    };
    let root = &snapshot.root;
    let kept = walk.kept(root, start, true);
    walk.auto = None; // the tool rules may be the same automaton: borrowed again below
    let mut out = Vec::with_capacity(1024);
    write_kept(&mut out, &kept);
    let structure_fp = bytes_of(py, &out);
    out.clear();
    write_node(&mut out, root, false);
    let snapshot_json = bytes_of(py, &out);
    let mut ids: Vec<String> = attestation_node(root)
        .map(|items| items.iter().filter_map(|i| if let Node::Str(s) = i { Some(s.to_string()) } else { None }).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    let (mut tool_fp, mut tools_json, mut tools_matched, mut units) = (None, None, 0u64, walk.units);
    if let Some(t) = tools.as_ref() {
        out.clear();
        match tools_automaton.as_ref() {
            Some(a) => {
                let mut a = a.borrow_mut();
                let start = a.start;
                let copy = drop_node(&mut a, &t.root, start, &mut tools_matched, &mut units);
                write_kept(&mut out, &copy);
                tool_fp = Some(bytes_of(py, &out));
                out.clear();
                write_node(&mut out, &t.root, false);
                tools_json = Some(bytes_of(py, &out));
            }
            None => {
                write_node(&mut out, &t.root, true);
                let both = bytes_of(py, &out);
                tool_fp = Some(both.clone());
                tools_json = Some(both);
            }
        }
    }
    let found: Vec<f64> = if walk.tokens.is_none() { walk.parts.iter().flatten().copied().collect() } else { Vec::new() };
    Ok((structure_fp, snapshot_json, walk.tokens, walk.cost, walk.matched, found, ids, tool_fp, tools_json,
        tools_matched, units))
}

// ---------------------------------------------------------------------------------------
// Avro
// ---------------------------------------------------------------------------------------

/// Records of one schema (its JSON text, logical types left out) to Avro binary and
/// back. The `apache-avro` crate parses and checks the schema; the datum is written and
/// read here, straight from and to Python values (the crate's own writer builds a
/// `Value` tree, validates it and resolves the schema's names for every datum: measured,
/// it saved a quarter of fastavro's time where this saves most of it).
///
/// `encode` reads values as fastavro's writer reads them where the two agree; anything
/// else (a missing field, a union of more than null and one type, a map, a named
/// reference) raises `Mismatch`. `decode(value, start)` gives the record and where it
/// ended, with the values fastavro's reader gives (dicts, lists, str, bytes, int, float,
/// bool, None; an enum's symbol); input cut short, not UTF-8 where a string is, a boolean
/// byte other than 0 or 1, an index out of range or a schema part it leaves (floats,
/// fixed, named references) raises `Mismatch`, and the caller reads the record with the
/// reference, which says what is wrong.
#[pyclass(frozen)]
struct Avro {
    plan: Plan,
}

/// A schema as the encoder walks it, its field names as Python strings made once.
enum Plan {
    Null,
    Boolean,
    Int,
    Long,
    Double,
    String,
    Bytes,
    Enum(Vec<String>),
    Array(Box<Plan>),
    /// `[null, T]`
    Nullable(Box<Plan>),
    Record(Vec<(Py<PyString>, Plan)>),
    /// Left to the reference: floats, maps, fixed, named references, other unions.
    Other,
}

fn plan(py: Python<'_>, schema: &Schema) -> Plan {
    match schema {
        Schema::Null => Plan::Null,
        Schema::Boolean => Plan::Boolean,
        Schema::Int => Plan::Int,
        Schema::Long => Plan::Long,
        Schema::Double => Plan::Double,
        Schema::String => Plan::String,
        Schema::Bytes => Plan::Bytes,
        Schema::Enum(e) => Plan::Enum(e.symbols.clone()),
        Schema::Array(a) => Plan::Array(Box::new(plan(py, &a.items))),
        Schema::Union(u) => match u.variants() {
            [Schema::Null, t] if *t != Schema::Null => Plan::Nullable(Box::new(plan(py, t))),
            _ => Plan::Other,
        },
        Schema::Record(r) => {
            Plan::Record(r.fields.iter().map(|f| (PyString::intern(py, &f.name).unbind(), plan(py, &f.schema))).collect())
        }
        _ => Plan::Other,
    }
}

fn int_of(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if v.is_exact_instance_of::<PyInt>() {
        return v.extract::<i64>().map_err(|_| mismatch("an integer beyond 64 bits"));
    }
    Err(mismatch("not an integer"))
}

/// Avro's `long`: zig-zag, then 7 bits a byte, low first.
fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

fn write_value(py: Python<'_>, plan: &Plan, v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    match plan {
        Plan::Null if v.is_none() => {}
        Plan::Boolean if v.is_exact_instance_of::<PyBool>() => out.push(u8::from(v.is_truthy()?)),
        Plan::Int => {
            let n = int_of(v)?;
            write_long(i64::from(i32::try_from(n).map_err(|_| mismatch("an int beyond 32 bits"))?), out);
        }
        Plan::Long => write_long(int_of(v)?, out),
        Plan::Double if v.is_exact_instance_of::<PyFloat>() || v.is_exact_instance_of::<PyInt>() => {
            let x = v.extract::<f64>().map_err(|_| mismatch("not a double"))?;
            out.extend_from_slice(&x.to_le_bytes());
        }
        Plan::String => match v.downcast_exact::<PyString>() {
            Ok(s) => write_bytes(s.to_str()?.as_bytes(), out),
            Err(_) => return Err(mismatch("not a string")),
        },
        Plan::Bytes => match v.downcast_exact::<PyBytes>() {
            Ok(b) => write_bytes(b.as_bytes(), out),
            Err(_) => return Err(mismatch("not bytes")),
        },
        Plan::Enum(symbols) => {
            let s = v.downcast_exact::<PyString>().map_err(|_| mismatch("an enum symbol that is not a string"))?;
            let s = s.to_str()?;
            match symbols.iter().position(|x| x == s) {
                Some(i) => write_long(i as i64, out),
                None => return Err(mismatch("not a symbol of the enum")),
            }
        }
        Plan::Array(items) => {
            let l = v.downcast_exact::<PyList>().map_err(|_| mismatch("an array that is not a list"))?;
            if !l.is_empty() {
                write_long(l.len() as i64, out);
                for item in l.iter() {
                    write_value(py, items, &item, out)?;
                }
            }
            out.push(0);
        }
        Plan::Nullable(inner) => {
            if v.is_none() {
                out.push(0);
            } else {
                out.push(2); // branch 1, zig-zag
                write_value(py, inner, v, out)?;
            }
        }
        Plan::Record(fields) => {
            let d = v.downcast_exact::<PyDict>().map_err(|_| mismatch("a record that is not a dict"))?;
            for (name, field) in fields {
                let item = d.get_item(name.bind(py))?.ok_or_else(|| mismatch("a field is missing"))?;
                write_value(py, field, &item, out)?;
            }
        }
        _ => return Err(mismatch("a value of another type than its schema's")),
    }
    Ok(())
}


struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn take(&mut self, n: usize) -> PyResult<&[u8]> {
        if n > self.bytes.len() - self.at {
            return Err(mismatch("the record is cut short"));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn long(&mut self) -> PyResult<i64> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self.take(1)?.first().expect("one byte");
            if shift == 63 && b > 1 {
                return Err(mismatch("a varint beyond 64 bits"));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(mismatch("a varint beyond 64 bits"));
            }
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn length(&mut self) -> PyResult<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| mismatch("a negative length"))
    }

    /// A block's item count (a negative count is followed by the block's size in bytes).
    fn block(&mut self) -> PyResult<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
            return usize::try_from(n.unsigned_abs()).map_err(|_| mismatch("a block too large"));
        }
        Ok(n as usize)
    }
}

fn read_value<'py>(py: Python<'py>, plan: &Plan, input: &mut Input<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match plan {
        Plan::Null => py.None().into_bound(py),
        Plan::Boolean => match input.take(1)?[0] {
            0 => PyBool::new(py, false).to_owned().into_any(),
            1 => PyBool::new(py, true).to_owned().into_any(),
            _ => return Err(mismatch("a boolean byte other than 0 or 1")),
        },
        Plan::Int => {
            let n = input.long()?;
            i32::try_from(n).map_err(|_| mismatch("an int beyond 32 bits"))?;
            n.into_pyobject(py)?.into_any()
        }
        Plan::Long => input.long()?.into_pyobject(py)?.into_any(),
        Plan::Double => {
            let b: [u8; 8] = input.take(8)?.try_into().expect("eight bytes");
            PyFloat::new(py, f64::from_le_bytes(b)).into_any()
        }
        Plan::String => {
            let n = input.length()?;
            let text = std::str::from_utf8(input.take(n)?).map_err(|_| mismatch("a string that is not UTF-8"))?;
            PyString::new(py, text).into_any()
        }
        Plan::Bytes => {
            let n = input.length()?;
            PyBytes::new(py, input.take(n)?).into_any()
        }
        Plan::Enum(symbols) => {
            let i = input.long()?;
            let symbol = usize::try_from(i).ok().and_then(|i| symbols.get(i));
            PyString::new(py, symbol.ok_or_else(|| mismatch("an enum index out of range"))?).into_any()
        }
        Plan::Array(items) => {
            let out = PyList::empty(py);
            loop {
                let n = input.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    out.append(read_value(py, items, input)?)?;
                }
            }
            out.into_any()
        }
        Plan::Nullable(inner) => match input.long()? {
            0 => py.None().into_bound(py),
            1 => read_value(py, inner, input)?,
            _ => return Err(mismatch("a union index out of range")),
        },
        Plan::Record(fields) => {
            let out = PyDict::new(py);
            for (name, field) in fields {
                out.set_item(name.bind(py), read_value(py, field, input)?)?;
            }
            out.into_any()
        }
        Plan::Other => return Err(mismatch("a schema part left to the reference")),
    })
}

#[pymethods]
impl Avro {
    #[new]
    fn new(py: Python<'_>, schema: &str) -> PyResult<Self> {
        let schema = Schema::parse_str(schema).map_err(|e| PyValueError::new_err(format!("not an Avro schema: {e}")))?;
        Ok(Avro { plan: plan(py, &schema) })
    }

    fn encode<'py>(&self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(512);
        write_value(py, &self.plan, record, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }

    /// (the record, the offset after it)
    fn decode<'py>(&self, py: Python<'py>, value: &[u8], start: usize) -> PyResult<(Bound<'py, PyAny>, usize)> {
        if start > value.len() {
            return Err(mismatch("the record starts past its end"));
        }
        let mut input = Input { bytes: value, at: start };
        let record = read_value(py, &self.plan, &mut input)?;
        Ok((record, input.at))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Automaton>()?;
    m.add_class::<Usage>()?;
    m.add_class::<Avro>()?;
    m.add_function(wrap_pyfunction!(strip, m)?)?;
    m.add_function(wrap_pyfunction!(drop_ignored, m)?)?;
    m.add_class::<Document>()?;
    m.add_function(wrap_pyfunction!(document, m)?)?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add("Mismatch", m.py().get_type::<Mismatch>())?;
    Ok(())
}
