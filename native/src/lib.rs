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
//! - `Avro`: Avro binary of a record and back (`codec.py`'s fastavro writer and reader
//!   are the reference).

use std::collections::HashMap;

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
    ids: HashMap<States, i32>,
    keys: Vec<HashMap<String, (u64, i32)>>,
    items: Vec<HashMap<i64, (u64, i32)>>,
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
        self.keys.push(HashMap::new());
        self.items.push(HashMap::new());
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
            ids: HashMap::new(),
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
}

#[pymethods]
impl Usage {
    /// `strip_top`: `strip` and the top-level keys left out besides (the attestation ids).
    #[new]
    fn new(
        token_keys: Vec<Py<PyString>>,
        cost_keys: Vec<Py<PyString>>,
        groups: Vec<Vec<Py<PyString>>>,
        part_keys: Vec<Py<PyString>>,
        strip: Py<PyFrozenSet>,
        strip_top: Py<PyFrozenSet>,
    ) -> Self {
        Usage { token_keys, cost_keys, groups, part_keys, strip, strip_top }
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
    m.add("Mismatch", m.py().get_type::<Mismatch>())?;
    Ok(())
}
