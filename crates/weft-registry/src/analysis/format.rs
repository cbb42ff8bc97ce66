//! Istio's templates are Go `fmt` strings: `%s`, `%v` and `%d` print an argument as it is, `%q`
//! quotes it as Go's `strconv.Quote` does.

const LIST: char = '\u{1e}';
const ITEM: char = '\u{1f}';

/// An argument that is a Go slice: `%v` prints `[a b]`, `%q` prints `["a" "b"]`. Each item is
/// kept, empty ones too, as Go prints them (`[ a]`).
pub fn go_list<S: ToString>(items: &[S]) -> String {
    let mut out = String::from(LIST);
    for item in items {
        out.push(ITEM);
        out.push_str(&item.to_string());
    }
    out
}

/// The template with its verbs replaced by `args`, in order; a verb without an argument prints
/// Go's `%!s(MISSING)`.
pub fn go_format(template: &str, args: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'v' | 'd' | 'q')) => match args.next() {
                Some(a) if a.starts_with(LIST) => {
                    let items = a[LIST.len_utf8()..].split(ITEM).skip(1);
                    let shown: Vec<String> = if verb == 'q' {
                        items.map(quote).collect()
                    } else {
                        items.map(str::to_string).collect()
                    };
                    out.push('[');
                    out.push_str(&shown.join(" "));
                    out.push(']');
                }
                Some(a) if verb == 'q' => out.push_str(&quote(a)),
                Some(a) => out.push_str(a),
                None => {
                    out.push_str("%!");
                    out.push(verb);
                    out.push_str("(MISSING)");
                }
            },
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_take_arguments_in_order() {
        let args = ["host".to_string(), "a\"b".to_string()];
        assert_eq!(
            go_format("Referenced %s not found: %q", &args),
            "Referenced host not found: \"a\\\"b\""
        );
        assert_eq!(go_format("%d%% of %s", &["5".into()]), "5% of %!s(MISSING)");
    }

    #[test]
    fn lists_print_as_go_prints_slices() {
        let args = [
            go_list(&[9080, 9090]),
            go_list(&["", "a"]),
            go_list::<&str>(&[]),
        ];
        assert_eq!(go_format("%v %q %v", &args), "[9080 9090] [\"\" \"a\"] []");
    }
}
