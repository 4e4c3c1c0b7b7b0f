//! The `headers` exchange: a message goes to every destination whose binding arguments
//! match the message's headers, ignoring the routing key. The matching rule (`x-match`
//! modes, presence-only void values, which `x-` keys count) is RabbitMQ's, kept here as
//! a pure function so it can be tested apart from any exchange, and the `x-match`
//! argument is checked at bind time so that a typo is refused rather than silently
//! matching nothing.

use super::kind::{Binding, DestinationId, ExchangeType};
use crate::message::{FieldTable, FieldValue, Message};

/// The binding argument choosing the matching mode.
pub const X_MATCH: &str = "x-match";

/// The matching mode of one headers binding, from its `x-match` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XMatch {
    /// `all` (the default): every considered argument must match; `x-` arguments are
    /// not considered.
    #[default]
    All,
    /// `any`: at least one considered argument must match; `x-` arguments are not
    /// considered.
    Any,
    /// `all-with-x`: like `all`, but `x-` arguments (other than `x-match`) count too.
    AllWithX,
    /// `any-with-x`: like `any`, but `x-` arguments (other than `x-match`) count too.
    AnyWithX,
}

/// The accepted `x-match` values, for error messages.
const ALLOWED: &str = "all, any, all-with-x, any-with-x";

impl XMatch {
    /// The mode named `value`, or `None` if it is not one of `all`, `any`, `all-with-x`,
    /// `any-with-x`.
    pub fn parse(value: &str) -> Option<XMatch> {
        match value {
            "all" => Some(XMatch::All),
            "any" => Some(XMatch::Any),
            "all-with-x" => Some(XMatch::AllWithX),
            "any-with-x" => Some(XMatch::AnyWithX),
            _ => None,
        }
    }

    /// The mode chosen by a binding's arguments: `All` when there is no `x-match`, an
    /// error naming the argument and the allowed values when it is not one of them.
    pub fn from_arguments(arguments: &FieldTable) -> Result<XMatch, String> {
        match arguments.get(X_MATCH) {
            None => Ok(XMatch::All),
            Some(FieldValue::Str(s)) => XMatch::parse(s).ok_or_else(|| {
                format!("invalid {X_MATCH} argument {s:?}: expected one of {ALLOWED}")
            }),
            Some(other) => Err(format!(
                "invalid {X_MATCH} argument: expected a string, one of {ALLOWED}, got {} {}",
                other.type_name(),
                other
            )),
        }
    }

    /// The mode's name, as given in `x-match`.
    pub fn as_str(self) -> &'static str {
        match self {
            XMatch::All => "all",
            XMatch::Any => "any",
            XMatch::AllWithX => "all-with-x",
            XMatch::AnyWithX => "any-with-x",
        }
    }

    /// True for the `*-with-x` modes, which consider `x-` arguments.
    fn with_x(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

/// True when a message with `headers` matches a binding with `binding_args`.
///
/// Each considered argument matches when the header of that name is present and, unless
/// the argument's value is [`FieldValue::Void`] (presence only), equal to it, type
/// included. `x-match` is never considered; other `x-` arguments only under the
/// `*-with-x` modes. Under `all` no considered argument matches trivially; under `any`
/// it never matches. A binding with an invalid `x-match` (which `validate_binding`
/// refuses) matches nothing.
pub fn headers_match(binding_args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let Ok(mode) = XMatch::from_arguments(binding_args) else {
        return false;
    };
    let mut considered = binding_args
        .iter()
        .filter(|(k, _)| k.as_str() != X_MATCH && (mode.with_x() || !k.starts_with("x-")));
    let arg_matches =
        |(key, expected): (&String, &FieldValue)| match headers.and_then(|h| h.get(key)) {
            None => false,
            Some(_) if *expected == FieldValue::Void => true,
            // By meaning: an AMQP 'I' 5 matches an 'l' 5, as in RabbitMQ.
            Some(actual) => actual.plain() == expected.plain(),
        };
    match mode {
        XMatch::All | XMatch::AllWithX => considered.all(arg_matches),
        XMatch::Any | XMatch::AnyWithX => considered.any(arg_matches),
    }
}

/// Routes by header match; keeps no index, as every binding must be checked anyway.
pub struct HeadersExchange;

impl ExchangeType for HeadersExchange {
    fn validate_binding(&self, _routing_key: &str, arguments: &FieldTable) -> Result<(), String> {
        XMatch::from_arguments(arguments).map(|_| ())
    }

    fn route(&self, message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        let headers = message.properties.headers.as_ref();
        out.extend(
            bindings
                .iter()
                .filter(|b| headers_match(&b.arguments, headers))
                .map(|b| b.destination),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.into())
    }

    #[test]
    fn parse_modes() {
        assert_eq!(XMatch::parse("all"), Some(XMatch::All));
        assert_eq!(XMatch::parse("any"), Some(XMatch::Any));
        assert_eq!(XMatch::parse("all-with-x"), Some(XMatch::AllWithX));
        assert_eq!(XMatch::parse("any-with-x"), Some(XMatch::AnyWithX));
        assert_eq!(XMatch::parse("ALL"), None);
        assert_eq!(XMatch::parse(""), None);
        for m in [XMatch::All, XMatch::Any, XMatch::AllWithX, XMatch::AnyWithX] {
            assert_eq!(XMatch::parse(m.as_str()), Some(m));
        }
        assert_eq!(XMatch::from_arguments(&FieldTable::new()), Ok(XMatch::All));
        assert_eq!(
            XMatch::from_arguments(&table(&[("x-match", s("any"))])),
            Ok(XMatch::Any)
        );
    }

    #[test]
    fn bad_x_match_is_refused_at_bind() {
        let x = HeadersExchange;
        let err = x
            .validate_binding("", &table(&[("x-match", s("some"))]))
            .unwrap_err();
        assert!(err.contains("x-match") && err.contains("\"some\""), "{err}");
        assert!(err.contains("all, any, all-with-x, any-with-x"), "{err}");
        let err = x
            .validate_binding("", &table(&[("x-match", FieldValue::Int(1))]))
            .unwrap_err();
        assert!(err.contains("x-match") && err.contains("integer"), "{err}");
        assert!(err.contains("all-with-x"), "{err}");
        assert!(x.validate_binding("", &FieldTable::new()).is_ok());
        assert!(x
            .validate_binding("", &table(&[("x-match", s("any-with-x")), ("a", s("1"))]))
            .is_ok());
        // And such a binding, if it got through, matches nothing.
        assert!(!headers_match(
            &table(&[("x-match", s("some"))]),
            Some(&FieldTable::new())
        ));
    }

    #[test]
    fn all_mode() {
        let args = table(&[("format", s("pdf")), ("type", s("report"))]);
        let both = table(&[("format", s("pdf")), ("type", s("report")), ("z", s("1"))]);
        let one = table(&[("format", s("pdf"))]);
        let wrong = table(&[("format", s("pdf")), ("type", s("log"))]);
        assert!(headers_match(&args, Some(&both)));
        assert!(!headers_match(&args, Some(&one)));
        assert!(!headers_match(&args, Some(&wrong)));
        assert!(!headers_match(&args, None));
        let mut explicit = args.clone();
        explicit.insert("x-match".into(), s("all"));
        assert!(headers_match(&explicit, Some(&both)));
        assert!(!headers_match(&explicit, Some(&one)));
    }

    #[test]
    fn any_mode() {
        let args = table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        assert!(headers_match(&args, Some(&table(&[("format", s("pdf"))]))));
        assert!(headers_match(&args, Some(&table(&[("type", s("report"))]))));
        assert!(!headers_match(&args, Some(&table(&[("format", s("zip"))]))));
        assert!(!headers_match(&args, Some(&FieldTable::new())));
        assert!(!headers_match(&args, None));
    }

    #[test]
    fn no_considered_arguments() {
        let headers = table(&[("a", s("1"))]);
        assert!(headers_match(&FieldTable::new(), None));
        assert!(headers_match(&FieldTable::new(), Some(&headers)));
        let all_x_only = table(&[("x-match", s("all")), ("x-tag", s("t"))]);
        assert!(headers_match(&all_x_only, None));
        let any = table(&[("x-match", s("any"))]);
        assert!(!headers_match(&any, Some(&headers)));
        let any_x_only = table(&[("x-match", s("any")), ("x-tag", s("t"))]);
        assert!(!headers_match(
            &any_x_only,
            Some(&table(&[("x-tag", s("t"))]))
        ));
        let any_with_x_empty = table(&[("x-match", s("any-with-x"))]);
        assert!(!headers_match(&any_with_x_empty, Some(&headers)));
        let all_with_x_empty = table(&[("x-match", s("all-with-x"))]);
        assert!(headers_match(&all_with_x_empty, None));
    }

    #[test]
    fn void_matches_presence_only() {
        let args = table(&[("trace", FieldValue::Void)]);
        assert!(headers_match(&args, Some(&table(&[("trace", s("on"))]))));
        assert!(headers_match(
            &args,
            Some(&table(&[("trace", FieldValue::Void)]))
        ));
        assert!(headers_match(
            &args,
            Some(&table(&[("trace", FieldValue::Int(0))]))
        ));
        assert!(!headers_match(&args, Some(&table(&[("other", s("on"))]))));
        assert!(!headers_match(&args, None));
        // A void header does not match a non-void binding value.
        let args = table(&[("trace", s("on"))]);
        assert!(!headers_match(
            &args,
            Some(&table(&[("trace", FieldValue::Void)]))
        ));
    }

    #[test]
    fn values_compare_with_their_type() {
        let args = table(&[("n", FieldValue::Int(1))]);
        assert!(headers_match(
            &args,
            Some(&table(&[("n", FieldValue::Int(1))]))
        ));
        assert!(!headers_match(
            &args,
            Some(&table(&[("n", FieldValue::Int(2))]))
        ));
        assert!(!headers_match(&args, Some(&table(&[("n", s("1"))]))));
        assert!(!headers_match(
            &args,
            Some(&table(&[("n", FieldValue::Float(1.0))]))
        ));
        let args = table(&[("b", FieldValue::Bool(true))]);
        assert!(headers_match(
            &args,
            Some(&table(&[("b", FieldValue::Bool(true))]))
        ));
        assert!(!headers_match(
            &args,
            Some(&table(&[("b", FieldValue::Bool(false))]))
        ));
    }

    #[test]
    fn x_arguments_count_only_with_x() {
        let headers_with = table(&[("a", s("1")), ("x-tenant", s("acme"))]);
        let headers_without = table(&[("a", s("1"))]);
        let headers_other = table(&[("a", s("1")), ("x-tenant", s("other"))]);
        for (mode, with, without, other) in [
            ("all", true, true, true),
            ("any", true, true, true),
            ("all-with-x", true, false, false),
            ("any-with-x", true, true, true),
        ] {
            let args = table(&[("x-match", s(mode)), ("a", s("1")), ("x-tenant", s("acme"))]);
            assert_eq!(headers_match(&args, Some(&headers_with)), with, "{mode}");
            assert_eq!(
                headers_match(&args, Some(&headers_without)),
                without,
                "{mode}"
            );
            assert_eq!(headers_match(&args, Some(&headers_other)), other, "{mode}");
        }
        // any-with-x matches on the x- argument alone; any does not look at it.
        let only_x = table(&[("x-tenant", s("acme"))]);
        let any_with_x = table(&[
            ("x-match", s("any-with-x")),
            ("b", s("2")),
            ("x-tenant", s("acme")),
        ]);
        assert!(headers_match(&any_with_x, Some(&only_x)));
        let any = table(&[
            ("x-match", s("any")),
            ("b", s("2")),
            ("x-tenant", s("acme")),
        ]);
        assert!(!headers_match(&any, Some(&only_x)));
        // x-match itself is never compared with a header of that name.
        let all_with_x = table(&[("x-match", s("all-with-x")), ("a", s("1"))]);
        assert!(headers_match(&all_with_x, Some(&headers_without)));
    }

    #[test]
    fn route_pushes_each_matching_binding() {
        let b = |dest, args: FieldTable| Binding {
            destination: dest,
            routing_key: "ignored".into(),
            arguments: args,
        };
        let bindings = vec![
            b(1, table(&[("format", s("pdf"))])),
            b(
                2,
                table(&[
                    ("x-match", s("any")),
                    ("format", s("zip")),
                    ("type", s("log")),
                ]),
            ),
            b(3, table(&[("format", s("zip"))])),
            b(4, FieldTable::new()),
            b(1, table(&[("type", s("log"))])),
        ];
        let x = HeadersExchange;
        let mut out = vec![];
        let m = Message::new("h", "any.key", "")
            .with_header("format", "pdf")
            .with_header("type", "log");
        x.route(&m, &bindings, &mut out);
        assert_eq!(out, vec![1, 2, 4, 1]);
        out.clear();
        x.route(&Message::new("h", "", ""), &bindings, &mut out);
        assert_eq!(out, vec![4]);
    }
}
