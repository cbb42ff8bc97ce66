//! Access log filters: Envoy's `status_code_filter`, `response_flag_filter`, `and_filter`,
//! `or_filter`, and the CEL `extension_filter` (`envoy.access_loggers.extension_filters.cel`)
//! that Istio's Telemetry `accessLogging[].filter.expression` becomes, for the part of CEL
//! Istio documents for it: comparisons of request and response attributes with literals,
//! joined by `&&`, `||` and `!` (`response.code >= 400`,
//! `request.headers['x-debug'] == 'true' || response.code == 503`).
//!
//! An expression outside that part is refused when the config is loaded, naming it; as in
//! Envoy, an attribute a request does not have (a missing header) makes its comparison false.

use crate::access_log::Entry;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Status {
        op: Op,
        value: u16,
    },
    /// Any of these flags (`access_log::flags`); all flags when empty.
    Flags(u32),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Cel(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Operand, Op, Operand),
    /// A boolean attribute or literal on its own.
    Truth(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Int(i64),
    Str(String),
    Bool(bool),
    Attr(Attribute),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    ResponseCode,
    ResponseFlags,
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestHost,
    RequestProtocol,
    RequestId,
    RequestSize,
    ResponseSize,
    RequestHeader(String),
    ResponseHeader(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl Filter {
    pub fn matches(&self, e: &Entry<'_>) -> bool {
        match self {
            Filter::Status { op, value } => compare(
                &Value::Int(i64::from(e.status)),
                *op,
                &Value::Int(i64::from(*value)),
            ),
            Filter::Flags(0) => e.flags != 0,
            Filter::Flags(f) => e.flags & f != 0,
            Filter::And(list) => list.iter().all(|f| f.matches(e)),
            Filter::Or(list) => list.iter().any(|f| f.matches(e)),
            Filter::Cel(expr) => expr.eval(e),
        }
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> bool {
    let ord = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        // CEL has no comparison across types: an error, and the log is not written.
        _ => return false,
    };
    match op {
        Op::Eq => ord.is_eq(),
        Op::Ne => ord.is_ne(),
        Op::Lt => ord.is_lt(),
        Op::Le => ord.is_le(),
        Op::Gt => ord.is_gt(),
        Op::Ge => ord.is_ge(),
    }
}

impl Expr {
    fn eval(&self, e: &Entry<'_>) -> bool {
        match self {
            Expr::Not(x) => !x.eval(e),
            Expr::And(a, b) => a.eval(e) && b.eval(e),
            Expr::Or(a, b) => a.eval(e) || b.eval(e),
            Expr::Compare(a, op, b) => match (a.value(e), b.value(e)) {
                (Some(x), Some(y)) => compare(&x, *op, &y),
                _ => false,
            },
            Expr::Truth(x) => x.value(e) == Some(Value::Bool(true)),
        }
    }
}

impl Operand {
    fn value(&self, e: &Entry<'_>) -> Option<Value> {
        let request = e.request;
        let header = |map: Option<&http::HeaderMap>, name: &str| {
            map?.get(name)?
                .to_str()
                .ok()
                .map(|s| Value::Str(s.to_string()))
        };
        Some(match self {
            Operand::Int(i) => Value::Int(*i),
            Operand::Str(s) => Value::Str(s.clone()),
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Attr(a) => match a {
                Attribute::ResponseCode => Value::Int(i64::from(e.status)),
                Attribute::ResponseFlags => Value::Int(i64::from(e.flags)),
                Attribute::RequestMethod => Value::Str(request?.method.to_string()),
                Attribute::RequestPath => {
                    Value::Str(request?.uri.path_and_query()?.as_str().to_string())
                }
                Attribute::RequestUrlPath => Value::Str(request?.uri.path().to_string()),
                Attribute::RequestHost => {
                    let r = request?;
                    match r.uri.authority() {
                        Some(a) => Value::Str(a.as_str().to_string()),
                        None => header(Some(&r.headers), "host")?,
                    }
                }
                Attribute::RequestProtocol => Value::Str(e.protocol.to_string()),
                Attribute::RequestId => header(request.map(|r| &r.headers), "x-request-id")?,
                Attribute::RequestSize => Value::Int(i64::try_from(e.bytes_received).ok()?),
                Attribute::ResponseSize => Value::Int(i64::try_from(e.bytes_sent).ok()?),
                Attribute::RequestHeader(n) => header(request.map(|r| &r.headers), n)?,
                Attribute::ResponseHeader(n) => header(e.response, n)?,
            },
        })
    }
}

/// Parses a CEL expression of the supported part; an error names what is not.
pub fn parse(expression: &str) -> Result<Expr, String> {
    let tokens = lex(expression)?;
    let mut p = Parser { tokens, at: 0 };
    let e = p.or()?;
    match p.tokens.get(p.at) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} in {expression:?}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            // CEL's unsigned literals (`200u`) compare as numbers too.
            if i < chars.len() && chars[i] == 'u' {
                i += 1;
            }
            out.push(Tok::Int(
                text.parse()
                    .map_err(|_| format!("bad number {text} in {s:?}"))?,
            ));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == '\'' || c == '"' {
            let mut j = i + 1;
            let mut text = String::new();
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    return Err(format!("escapes in strings are not supported: {s:?}"));
                }
                text.push(chars[j]);
                j += 1;
            }
            if j == chars.len() {
                return Err(format!("unterminated string in {s:?}"));
            }
            out.push(Tok::Str(text));
            i = j + 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "==" | "!=" | "<=" | ">=" | "&&" | "||" => Some(two),
            _ => None,
        };
        let op: &'static str = match op.as_deref().unwrap_or(&c.to_string()) {
            "==" => "==",
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            "&&" => "&&",
            "||" => "||",
            "<" => "<",
            ">" => ">",
            "!" => "!",
            "(" => "(",
            ")" => ")",
            "." => ".",
            "[" => "[",
            "]" => "]",
            other => return Err(format!("{other:?} is not supported in {s:?}")),
        };
        i += op.len();
        out.push(Tok::Op(op));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.or()?;
            if !self.eat(")") {
                return Err("missing )".into());
            }
            return Ok(e);
        }
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => Op::Eq,
            Some(Tok::Op("!=")) => Op::Ne,
            Some(Tok::Op("<")) => Op::Lt,
            Some(Tok::Op("<=")) => Op::Le,
            Some(Tok::Op(">")) => Op::Gt,
            Some(Tok::Op(">=")) => Op::Ge,
            _ => return Ok(Expr::Truth(left)),
        };
        self.at += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let Some(t) = self.peek().cloned() else {
            return Err("the expression ends too early".into());
        };
        self.at += 1;
        match t {
            Tok::Int(i) => Ok(Operand::Int(i)),
            Tok::Str(s) => Ok(Operand::Str(s)),
            Tok::Ident(i) if i == "true" => Ok(Operand::Bool(true)),
            Tok::Ident(i) if i == "false" => Ok(Operand::Bool(false)),
            Tok::Ident(first) => {
                let mut path = vec![first];
                while self.eat(".") {
                    match self.peek().cloned() {
                        Some(Tok::Ident(n)) => {
                            self.at += 1;
                            path.push(n);
                        }
                        other => return Err(format!("expected a name after '.', got {other:?}")),
                    }
                }
                let key = if self.eat("[") {
                    let Some(Tok::Str(k)) = self.peek().cloned() else {
                        return Err("expected a quoted key after '['".into());
                    };
                    self.at += 1;
                    if !self.eat("]") {
                        return Err("missing ]".into());
                    }
                    Some(k.to_ascii_lowercase())
                } else {
                    None
                };
                attribute(&path.join("."), key)
            }
            Tok::Op(o) => Err(format!("unexpected {o:?}")),
        }
    }
}

fn attribute(path: &str, key: Option<String>) -> Result<Operand, String> {
    let a = match (path, key) {
        ("response.code", None) => Attribute::ResponseCode,
        ("response.flags", None) => Attribute::ResponseFlags,
        ("request.method", None) => Attribute::RequestMethod,
        ("request.path", None) => Attribute::RequestPath,
        ("request.url_path", None) => Attribute::RequestUrlPath,
        ("request.host", None) => Attribute::RequestHost,
        ("request.protocol", None) => Attribute::RequestProtocol,
        ("request.id", None) => Attribute::RequestId,
        ("request.size", None) => Attribute::RequestSize,
        ("response.size", None) => Attribute::ResponseSize,
        ("request.headers", Some(k)) => Attribute::RequestHeader(k),
        ("response.headers", Some(k)) => Attribute::ResponseHeader(k),
        (p, _) => {
            return Err(format!(
                "attribute {p} is not supported by the Weft proxy's access log filter"
            ));
        }
    };
    Ok(Operand::Attr(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::RequestInfo;
    use std::time::{Duration, SystemTime};

    fn entry<'a>(status: u16, request: Option<&'a RequestInfo>) -> Entry<'a> {
        Entry {
            start: SystemTime::UNIX_EPOCH,
            protocol: "HTTP/1.1",
            request,
            response: None,
            status,
            flags: 0,
            details: "",
            bytes_received: 0,
            bytes_sent: 10,
            duration: Duration::ZERO,
            upstream_host: None,
            upstream_cluster: "",
            upstream_local: None,
            downstream_remote: "127.0.0.1:1".parse().unwrap(),
            downstream_local: "127.0.0.1:2".parse().unwrap(),
            route_name: "",
            requested_server_name: None,
            trace: None,
        }
    }

    #[test]
    fn istios_documented_expressions() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-debug", "true".parse().unwrap());
        let req = RequestInfo {
            method: http::Method::POST,
            uri: "/api/v1?x=1".parse().unwrap(),
            headers,
        };
        let cases = [
            ("response.code >= 400", 503, true),
            ("response.code >= 400", 200, false),
            (
                "response.code == 200 && request.method == 'POST'",
                200,
                true,
            ),
            ("!(response.code < 500)", 503, true),
            ("request.headers['x-debug'] == \"true\"", 200, true),
            (
                "request.headers['missing'] == 'x' || response.code == 201",
                201,
                true,
            ),
            ("request.headers['missing'] != 'x'", 200, false),
            (
                "request.url_path == '/api/v1' && request.path == '/api/v1?x=1'",
                200,
                true,
            ),
            ("response.size > 5u", 200, true),
            ("response.code == 'x'", 200, false),
        ];
        for (expr, status, want) in cases {
            let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
            assert_eq!(
                e.eval(&entry(status, Some(&req))),
                want,
                "{expr} at {status}"
            );
        }
    }

    #[test]
    fn what_is_outside_the_subset_is_refused_by_name() {
        for (expr, says) in [
            ("connection.mtls", "connection.mtls"),
            ("response.code >= 400 &&", "ends too early"),
            ("size(request.path) > 3", "size"),
            ("request.path.startsWith('/a')", "not supported"),
            ("response.code + 1 > 2", "\"+\""),
        ] {
            let err = parse(expr).unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}
