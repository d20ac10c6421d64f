//! The few Python semantics that show through ComfyUI's validation errors:
//! `int()`, `float()`, `str()`, `repr()`, `==` and `<` on JSON-shaped
//! values. ComfyUI formats its messages with f-strings and compares with
//! Python operators, so reproducing its bodies byte for byte means
//! reproducing these.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// A Python value as `json.loads` would build it, plus the integers and
/// floats that `int()` and `float()` can produce beyond JSON's reach.
#[derive(Debug, Clone)]
pub(crate) enum Py {
    None,
    Bool(bool),
    Int(PyInt),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

/// A Python `int`: exact for every JSON integer (`i128` holds both `i64`
/// and `u64`), and kept as decimal digits beyond that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PyInt {
    Small(i128),
    /// Magnitude beyond `i128`; `digits` has no sign and no leading zeros.
    Big {
        negative: bool,
        digits: String,
    },
}

/// A raised Python exception: its type's full name (builtins bare),
/// `str(exception)`, and `traceback.format_tb()` when a real Python raised
/// it on a backend (the gateway's own raise none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyErr {
    pub type_name: std::borrow::Cow<'static, str>,
    pub message: String,
    pub traceback: Vec<String>,
}

impl PyErr {
    pub fn new(type_name: &'static str, message: impl Into<String>) -> Self {
        PyErr {
            type_name: type_name.into(),
            message: message.into(),
            traceback: Vec::new(),
        }
    }

    /// `KeyError(key)`, whose `str()` is the key's `repr()`.
    pub fn key_error(key: &Py) -> Self {
        PyErr::new("KeyError", key.repr())
    }
}

impl From<&Value> for Py {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Py::None,
            Value::Bool(b) => Py::Bool(*b),
            Value::Number(n) => number_to_py(n),
            Value::String(s) => Py::Str(s.clone()),
            Value::Array(a) => Py::List(a.iter().map(Py::from).collect()),
            Value::Object(o) => Py::Dict(o.iter().map(|(k, v)| (k.clone(), Py::from(v))).collect()),
        }
    }
}

fn number_to_py(n: &Number) -> Py {
    if let Some(i) = n.as_i64() {
        Py::Int(PyInt::Small(i128::from(i)))
    } else if let Some(u) = n.as_u64() {
        Py::Int(PyInt::Small(i128::from(u)))
    } else {
        Py::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

impl Py {
    /// The name `type(x).__name__` gives, as quoted in `TypeError`s.
    pub fn type_name(&self) -> &'static str {
        match self {
            Py::None => "NoneType",
            Py::Bool(_) => "bool",
            Py::Int(_) => "int",
            Py::Float(_) => "float",
            Py::Str(_) => "str",
            Py::List(_) => "list",
            Py::Dict(_) => "dict",
        }
    }

    /// Back to JSON, as `json.dumps` would write it. The values JSON cannot
    /// hold (NaN, infinities) become `null`; integers beyond 64 bits become
    /// the nearest float.
    pub fn to_json(&self) -> Value {
        match self {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(*b),
            Py::Int(i) => i.to_json(),
            Py::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Py::Str(s) => Value::String(s.clone()),
            Py::List(l) => Value::Array(l.iter().map(Py::to_json).collect()),
            Py::Dict(d) => Value::Object(
                d.iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// `str(x)`.
    pub fn str(&self) -> String {
        match self {
            Py::Str(s) => s.clone(),
            other => other.repr(),
        }
    }

    /// `repr(x)`.
    pub fn repr(&self) -> String {
        let mut out = String::new();
        self.write_repr(&mut out);
        out
    }

    fn write_repr(&self, out: &mut String) {
        match self {
            Py::None => out.push_str("None"),
            Py::Bool(true) => out.push_str("True"),
            Py::Bool(false) => out.push_str("False"),
            Py::Int(i) => out.push_str(&i.to_string()),
            Py::Float(f) => out.push_str(&float_repr(*f)),
            Py::Str(s) => out.push_str(&str_repr(s)),
            Py::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_repr(out);
                }
                out.push(']');
            }
            Py::Dict(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&str_repr(k));
                    out.push_str(": ");
                    v.write_repr(out);
                }
                out.push('}');
            }
        }
    }

    /// Python's `bool` is an `int`; this is the numeric view of both.
    fn as_number(&self) -> Option<Numeric<'_>> {
        match self {
            Py::Bool(b) => Some(Numeric::Int(Small(i128::from(*b)))),
            Py::Int(i) => Some(Numeric::Int(IntRef::from(i))),
            Py::Float(f) => Some(Numeric::Float(*f)),
            _ => None,
        }
    }

    /// `a == b`.
    pub fn eq(&self, other: &Py) -> bool {
        if let (Some(a), Some(b)) = (self.as_number(), other.as_number()) {
            return numeric_cmp(a, b) == Some(Ordering::Equal);
        }
        match (self, other) {
            (Py::None, Py::None) => true,
            (Py::Str(a), Py::Str(b)) => a == b,
            (Py::List(a), Py::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq(y))
            }
            (Py::Dict(a), Py::Dict(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v.eq(v2)))
            }
            _ => false,
        }
    }

    /// `a < b` (`op` is `"<"`) or `a > b` (`op` is `">"`), with Python's
    /// `TypeError` for types that do not order.
    pub fn compare(&self, op: &'static str, other: &Py) -> Result<bool, PyErr> {
        let wanted = if op == "<" {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        if let (Some(a), Some(b)) = (self.as_number(), other.as_number()) {
            return Ok(numeric_cmp(a, b) == Some(wanted));
        }
        match (self, other) {
            (Py::Str(a), Py::Str(b)) => Ok(a.cmp(b) == wanted),
            (Py::List(a), Py::List(b)) => {
                // Lexicographic: the first unequal pair decides, else length.
                for (x, y) in a.iter().zip(b) {
                    if !x.eq(y) {
                        return x.compare(op, y);
                    }
                }
                Ok(a.len().cmp(&b.len()) == wanted)
            }
            _ => Err(PyErr::new(
                "TypeError",
                format!(
                    "'{op}' not supported between instances of '{}' and '{}'",
                    self.type_name(),
                    other.type_name()
                ),
            )),
        }
    }

    /// `x in container` for a list (element equality).
    pub fn in_list(&self, list: &[Py]) -> bool {
        list.iter().any(|e| self.eq(e))
    }
}

/// `repr()` of a JSON value read as Python would read it.
pub(crate) fn repr_json(v: &Value) -> String {
    Py::from(v).repr()
}

/// `str()` of a JSON value read as Python would read it.
pub(crate) fn str_json(v: &Value) -> String {
    Py::from(v).str()
}

/// `a == b` on two JSON values read as Python values.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    Py::from(a).eq(&Py::from(b))
}

// ---------------------------------------------------------------------------
// Integers and numeric comparison
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum IntRef<'a> {
    Small(i128),
    Big { negative: bool, digits: &'a str },
}
use IntRef::Small;

impl<'a> From<&'a PyInt> for IntRef<'a> {
    fn from(i: &'a PyInt) -> Self {
        match i {
            PyInt::Small(n) => IntRef::Small(*n),
            PyInt::Big { negative, digits } => IntRef::Big {
                negative: *negative,
                digits,
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Numeric<'a> {
    Int(IntRef<'a>),
    Float(f64),
}

/// Python's exact comparison between ints and floats (no rounding through
/// `float`); `None` when a NaN is involved.
fn numeric_cmp(a: Numeric<'_>, b: Numeric<'_>) -> Option<Ordering> {
    match (a, b) {
        (Numeric::Float(x), Numeric::Float(y)) => x.partial_cmp(&y),
        (Numeric::Int(x), Numeric::Int(y)) => Some(int_cmp(x, y)),
        (Numeric::Int(x), Numeric::Float(y)) => int_float_cmp(x, y),
        (Numeric::Float(x), Numeric::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
    }
}

fn int_cmp(a: IntRef<'_>, b: IntRef<'_>) -> Ordering {
    match (a, b) {
        (Small(x), Small(y)) => x.cmp(&y),
        // A big int's magnitude exceeds every small one.
        (IntRef::Big { negative, .. }, Small(_)) => {
            if negative {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Small(_), IntRef::Big { negative, .. }) => {
            if negative {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (
            IntRef::Big {
                negative: na,
                digits: da,
            },
            IntRef::Big {
                negative: nb,
                digits: db,
            },
        ) => match (na, nb) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => {
                let magnitude = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if na { magnitude.reverse() } else { magnitude }
            }
        },
    }
}

fn int_float_cmp(i: IntRef<'_>, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() {
        return Some(if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        });
    }
    let n = match i {
        Small(n) => n,
        // Beyond i128 the float view is exact enough to order: no finite
        // float of that size has a fractional part.
        IntRef::Big { negative, digits } => {
            let magnitude: f64 = digits.parse().unwrap_or(f64::INFINITY);
            let value = if negative { -magnitude } else { magnitude };
            return value.partial_cmp(&f);
        }
    };
    let floor = f.floor();
    // 2^127 is exactly representable; beyond it every i128 is smaller.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if floor >= LIMIT {
        return Some(Ordering::Less);
    }
    if floor < -LIMIT {
        return Some(Ordering::Greater);
    }
    let fl = floor as i128;
    Some(match n.cmp(&fl) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

impl PyInt {
    fn to_json(&self) -> Value {
        match self {
            PyInt::Small(n) => {
                if let Ok(i) = i64::try_from(*n) {
                    Value::from(i)
                } else if let Ok(u) = u64::try_from(*n) {
                    Value::from(u)
                } else {
                    Number::from_f64(*n as f64).map_or(Value::Null, Value::Number)
                }
            }
            PyInt::Big { negative, digits } => {
                let magnitude: f64 = digits.parse().unwrap_or(f64::INFINITY);
                let value = if *negative { -magnitude } else { magnitude };
                Number::from_f64(value).map_or(Value::Null, Value::Number)
            }
        }
    }

    fn from_digits(negative: bool, digits: &str) -> PyInt {
        let trimmed = digits.trim_start_matches('0');
        if trimmed.is_empty() {
            return PyInt::Small(0);
        }
        if trimmed.len() <= 38 {
            // Fits: i128::MAX has 39 digits.
            let n: i128 = trimmed.parse().unwrap_or(0);
            return PyInt::Small(if negative { -n } else { n });
        }
        let parsed = if negative {
            format!("-{trimmed}").parse::<i128>().ok()
        } else {
            trimmed.parse::<i128>().ok()
        };
        match parsed {
            Some(n) => PyInt::Small(n),
            None => PyInt::Big {
                negative,
                digits: trimmed.to_string(),
            },
        }
    }

    /// `int(f)` for a finite float: truncation toward zero, exact.
    fn from_float(f: f64) -> PyInt {
        let t = f.trunc();
        const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
        if t.abs() < LIMIT {
            return PyInt::Small(t as i128);
        }
        PyInt::Big {
            negative: t < 0.0,
            digits: exact_integer_digits(t.abs()),
        }
    }
}

impl std::fmt::Display for PyInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyInt::Small(n) => write!(f, "{n}"),
            PyInt::Big { negative, digits } => {
                if *negative {
                    f.write_str("-")?;
                }
                f.write_str(digits)
            }
        }
    }
}

/// The exact decimal digits of an integral, finite, positive `f64`.
fn exact_integer_digits(f: f64) -> String {
    let bits = f.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let mut mantissa = bits & ((1u64 << 52) - 1);
    if exponent != 0 {
        mantissa |= 1u64 << 52;
    }
    let shift = exponent - 1075; // value = mantissa * 2^shift
    // Little-endian base-1e9 limbs.
    let mut limbs: Vec<u64> = vec![mantissa % 1_000_000_000, mantissa / 1_000_000_000];
    let mut remaining = shift.max(0);
    while remaining > 0 {
        let step = remaining.min(29);
        remaining -= step;
        let mut carry = 0u64;
        for limb in limbs.iter_mut() {
            let v = (*limb << step) + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push(carry % 1_000_000_000);
            carry /= 1_000_000_000;
        }
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut out = limbs.last().map(u64::to_string).unwrap_or_default();
    for limb in limbs.iter().rev().skip(1) {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

// ---------------------------------------------------------------------------
// int(), float()
// ---------------------------------------------------------------------------

/// Python's `str.isspace()`, which `int()` and `float()` strip.
fn is_py_space(c: char) -> bool {
    matches!(c, '\u{1c}'..='\u{1f}') || c.is_whitespace()
}

/// Digits with single underscores between them (PEP 515), underscores
/// removed; `None` if the text is not of that form.
fn digits_with_underscores(s: &str) -> Option<String> {
    if s.is_empty() || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    if !s.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    Some(s.replace('_', ""))
}

/// CPython's default `sys.get_int_max_str_digits()`.
const INT_MAX_STR_DIGITS: usize = 4300;

/// `int(x)`.
pub(crate) fn to_int(v: &Py) -> Result<PyInt, PyErr> {
    match v {
        Py::Bool(b) => Ok(PyInt::Small(i128::from(*b))),
        Py::Int(i) => Ok(i.clone()),
        Py::Float(f) => {
            if f.is_nan() {
                Err(PyErr::new(
                    "ValueError",
                    "cannot convert float NaN to integer",
                ))
            } else if f.is_infinite() {
                Err(PyErr::new(
                    "OverflowError",
                    "cannot convert float infinity to integer",
                ))
            } else {
                Ok(PyInt::from_float(*f))
            }
        }
        Py::Str(s) => {
            let invalid = || {
                PyErr::new(
                    "ValueError",
                    format!("invalid literal for int() with base 10: {}", str_repr(s)),
                )
            };
            let t = s.trim_matches(is_py_space);
            let (negative, body) = match t.as_bytes().first() {
                Some(b'-') => (true, &t[1..]),
                Some(b'+') => (false, &t[1..]),
                _ => (false, t),
            };
            let digits = digits_with_underscores(body).ok_or_else(invalid)?;
            if digits.len() > INT_MAX_STR_DIGITS {
                return Err(PyErr::new(
                    "ValueError",
                    format!(
                        "Exceeds the limit ({INT_MAX_STR_DIGITS} digits) for integer string conversion: value has {} digits; use sys.set_int_max_str_digits() to increase the limit",
                        digits.len()
                    ),
                ));
            }
            Ok(PyInt::from_digits(negative, &digits))
        }
        other => Err(PyErr::new(
            "TypeError",
            format!(
                "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                other.type_name()
            ),
        )),
    }
}

/// `float(x)`.
pub(crate) fn to_float(v: &Py) -> Result<f64, PyErr> {
    match v {
        Py::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Py::Int(PyInt::Small(n)) => Ok(*n as f64),
        Py::Int(PyInt::Big { negative, digits }) => {
            let magnitude: f64 = digits.parse().unwrap_or(f64::INFINITY);
            if magnitude.is_infinite() {
                return Err(PyErr::new(
                    "OverflowError",
                    "int too large to convert to float",
                ));
            }
            Ok(if *negative { -magnitude } else { magnitude })
        }
        Py::Float(f) => Ok(*f),
        Py::Str(s) => parse_float(s).ok_or_else(|| {
            PyErr::new(
                "ValueError",
                format!("could not convert string to float: {}", str_repr(s)),
            )
        }),
        other => Err(PyErr::new(
            "TypeError",
            format!(
                "float() argument must be a string or a real number, not '{}'",
                other.type_name()
            ),
        )),
    }
}

/// The grammar of Python's `float(str)`: optional sign, then `inf`,
/// `infinity` or `nan` in any case, or a decimal literal whose digit runs
/// may contain single underscores.
fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim_matches(is_py_space);
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(sign * f64::INFINITY);
    }
    if lower == "nan" {
        return Some(f64::NAN);
    }
    // mantissa [e|E [sign] exponent]
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let int_digits = if int_part.is_empty() {
        String::new()
    } else {
        digits_with_underscores(int_part)?
    };
    let frac_digits = match frac_part {
        None | Some("") => String::new(),
        Some(f) => digits_with_underscores(f)?,
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let mut literal = format!("{int_digits}.{frac_digits}");
    if literal.starts_with('.') {
        literal.insert(0, '0');
    }
    if let Some(e) = exponent {
        let (esign, edigits) = match e.as_bytes().first() {
            Some(b'-') => ("-", &e[1..]),
            Some(b'+') => ("", &e[1..]),
            _ => ("", e),
        };
        let edigits = digits_with_underscores(edigits)?;
        literal.push('e');
        literal.push_str(esign);
        literal.push_str(&edigits);
    }
    literal.parse::<f64>().ok().map(|v| sign * v)
}

// ---------------------------------------------------------------------------
// repr() of floats and strings
// ---------------------------------------------------------------------------

/// `repr(float)`: the shortest round-trip digits, in positional notation
/// when the decimal point falls within `-4 < point <= 16`, else scientific
/// with a signed, at least two-digit exponent.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", f); // shortest round-trip, e.g. "-1.5e-5"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exp + 1; // value = 0.DIGITS * 10^point
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = point - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    }
    out
}

/// `repr(str)`: single quotes unless the text has a single quote and no
/// double one; backslash escapes for the quote, backslash, `\t \n \r`, and
/// `\x`/`\u`/`\U` for characters Python does not consider printable.
pub(crate) fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An approximation of Python's `str.isprintable()` for one character:
/// everything except the control, format, separator (other than the space),
/// private-use and noncharacter code points. Unassigned code points, which
/// Python also escapes, are not known here.
fn is_printable(c: char) -> bool {
    let n = c as u32;
    !matches!(n,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000
        | 0xd800..=0xf8ff
        | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f
        | 0xf0000..=0x10ffff)
        && (n & 0xfffe) != 0xfffe
}

/// Python's truthiness of a JSON value (`bool(x)`).
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn int(s: &str) -> Result<String, String> {
        to_int(&Py::Str(s.into()))
            .map(|i| i.to_string())
            .map_err(|e| e.message)
    }

    #[test]
    fn int_of_strings_follows_python() {
        assert_eq!(int("512"), Ok("512".into()));
        assert_eq!(int(" -7\n"), Ok("-7".into()));
        assert_eq!(int("+0007"), Ok("7".into()));
        assert_eq!(int("1_000"), Ok("1000".into()));
        assert_eq!(int("-0"), Ok("0".into()));
        assert_eq!(
            int("123456789012345678901234567890123456789012"),
            Ok("123456789012345678901234567890123456789012".into())
        );
        for bad in [
            "3.0", "", " ", "1__0", "_1", "1_", "0x10", "1e3", "--1", "abc",
        ] {
            assert_eq!(
                int(bad),
                Err(format!(
                    "invalid literal for int() with base 10: {}",
                    str_repr(bad)
                )),
                "{bad:?}"
            );
        }
        let long = "9".repeat(4301);
        assert!(
            int(&long)
                .unwrap_err()
                .starts_with("Exceeds the limit (4300 digits)")
        );
    }

    #[test]
    fn int_of_other_values_follows_python() {
        assert_eq!(to_int(&Py::Float(3.99)).unwrap(), PyInt::Small(3));
        assert_eq!(to_int(&Py::Float(-3.99)).unwrap(), PyInt::Small(-3));
        assert_eq!(to_int(&Py::Bool(true)).unwrap(), PyInt::Small(1));
        assert_eq!(
            to_int(&Py::Float(1e300)).unwrap().to_string(),
            "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160"
        );
        assert_eq!(
            to_int(&Py::None).unwrap_err().message,
            "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
        );
        assert_eq!(
            to_int(&Py::Float(f64::NAN)).unwrap_err().message,
            "cannot convert float NaN to integer"
        );
    }

    #[test]
    fn float_of_strings_follows_python() {
        let f = |s: &str| to_float(&Py::Str(s.into()));
        assert_eq!(f("0.5").unwrap(), 0.5);
        assert_eq!(f(" 1e3 ").unwrap(), 1000.0);
        assert_eq!(f("1_0.2_5").unwrap(), 10.25);
        assert_eq!(f(".5").unwrap(), 0.5);
        assert_eq!(f("5.").unwrap(), 5.0);
        assert_eq!(f("-Infinity").unwrap(), f64::NEG_INFINITY);
        assert!(f("nan").unwrap().is_nan());
        for bad in [
            "",
            ".",
            "e5",
            "1e",
            "1_.5",
            "0x1",
            "abc",
            "1.5.5",
            "inf inity",
        ] {
            assert_eq!(
                f(bad).unwrap_err().message,
                format!("could not convert string to float: {}", str_repr(bad)),
                "{bad:?}"
            );
        }
        assert_eq!(
            to_float(&Py::Dict(vec![])).unwrap_err().message,
            "float() argument must be a string or a real number, not 'dict'"
        );
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e16, "1.2345e+16"),
            (123456.789, "123456.789"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (-2.5, "-2.5"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(str_repr("x.png"), "'x.png'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(str_repr("a\\b\n\t\u{1}"), "'a\\\\b\\n\\t\\x01'");
        assert_eq!(
            str_repr("caf\u{e9} \u{a0}\u{200b}"),
            "'caf\u{e9} \\xa0\\u200b'"
        );
        assert_eq!(str_repr("日本"), "'日本'");
    }

    #[test]
    fn repr_of_containers_matches_python() {
        let v = json!({"a": [1, 2.0, null, true, "s"], "b": {}});
        assert_eq!(repr_json(&v), "{'a': [1, 2.0, None, True, 's'], 'b': {}}");
        assert_eq!(str_json(&json!("plain")), "plain");
    }

    #[test]
    fn equality_and_order_follow_python() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!(true), &json!(1)));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(json_eq(
            &json!({"a": 1, "b": 2}),
            &json!({"b": 2, "a": 1.0})
        ));
        let lt = |a: Value, b: Value| Py::from(&a).compare("<", &Py::from(&b));
        assert_eq!(lt(json!(0), json!(1)), Ok(true));
        assert_eq!(
            lt(json!(18446744073709551615u64), json!(1.8446744073709552e19)),
            Ok(true)
        );
        assert_eq!(lt(json!(2), json!(1.5)), Ok(false));
        assert_eq!(lt(json!(1), json!(1.5)), Ok(true));
        assert_eq!(lt(json!("a"), json!("b")), Ok(true));
        assert_eq!(lt(json!([1, 2]), json!([1, 3])), Ok(true));
        assert_eq!(
            lt(json!("a"), json!(1)).unwrap_err().message,
            "'<' not supported between instances of 'str' and 'int'"
        );
        let nan = Py::Float(f64::NAN);
        assert_eq!(nan.compare("<", &Py::Int(PyInt::Small(0))), Ok(false));
        assert_eq!(nan.compare(">", &Py::Int(PyInt::Small(0))), Ok(false));
    }
}
