use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

fn one(line: &str) -> Result<Point<'_>, String> {
    let mut batch = parse(line.as_bytes(), Precision::Nanosecond, 42);
    if let Some(error) = batch.errors.pop() {
        return Err(error.to_string());
    }
    batch.points.pop().ok_or_else(|| "no point".to_string())
}

#[test]
fn parses_all_field_types_and_timestamps() {
    let point =
        one(r#"cpu,host=a,region=eu f=1.5,i=-3i,u=7u,s="x y",b=true,c=F 1000"#).expect("parse");
    assert_eq!(point.measurement, "cpu");
    assert_eq!(
        point.tags,
        vec![
            (Cow::from("host"), Cow::from("a")),
            (Cow::from("region"), Cow::from("eu"))
        ]
    );
    assert_eq!(
        point.fields,
        vec![
            (Cow::from("f"), FieldValue::Float(1.5)),
            (Cow::from("i"), FieldValue::Integer(-3)),
            (Cow::from("u"), FieldValue::Unsigned(7)),
            (Cow::from("s"), FieldValue::String(Cow::from("x y"))),
            (Cow::from("b"), FieldValue::Boolean(true)),
            (Cow::from("c"), FieldValue::Boolean(false)),
        ]
    );
    assert_eq!(point.timestamp, 1000);
    assert_eq!(one("m v=1").expect("no timestamp").timestamp, 42);
}

#[test]
fn borrows_plain_names() {
    let point = one("cpu,host=a v=1 1").expect("parse");
    assert!(matches!(point.measurement, Cow::Borrowed(_)));
    assert!(matches!(point.tags[0].1, Cow::Borrowed(_)));
}

#[test]
fn tags_are_sorted_and_duplicates_refused() {
    let point = one("m,z=1,a=2 v=1 1").expect("parse");
    assert_eq!(point.tags[0].0, "a");
    assert_eq!(
        one("m,a=1,a=2 v=1 1").unwrap_err(),
        "unable to parse 'm,a=1,a=2 v=1 1': duplicate tags"
    );
}

#[test]
fn escapes() {
    let point = one(r#"c\ p\,u,t\ k=v\,a\=l\ x f\=x="a\"b\\c\nd" 1"#).expect("parse");
    assert_eq!(point.measurement, "c p,u");
    assert_eq!(point.tags[0], (Cow::from("t k"), Cow::from("v,a=l x")));
    assert_eq!(point.fields[0].0, "f=x");
    assert_eq!(
        point.fields[0].1,
        FieldValue::String(Cow::from(r#"a"b\c\nd"#))
    );
}

#[test]
fn influxdb_error_texts() {
    let cases = [
        ("m,t=a f=abc 1", "invalid boolean"),
        ("m f=1 12abc", "bad timestamp"),
        ("m,t=a b f=1 1", "invalid field format"),
        ("f e=+1 1", "invalid boolean"),
        ("b a=tRUE 1", "invalid boolean"),
        ("m v=3\r", "invalid number"),
        ("m v=1 1\r", "bad timestamp"),
        ("x v=\"unterminated 1", "unbalanced quotes"),
        ("z,t= v=1 1", "missing tag value"),
        ("z,=x v=1 1", "missing tag key"),
        (",t=1 v=1 1", "missing measurement"),
        ("m", "missing fields"),
        ("m v= 1", "missing field value"),
        ("m =1 1", "missing field key"),
        ("ts v=1 -9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
        ("ts v=1 9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
        (
            "m f=9223372036854775808i 1",
            "unable to parse integer 9223372036854775808: strconv.ParseInt: parsing \"9223372036854775808\": value out of range",
        ),
    ];
    for (line, reason) in cases {
        assert_eq!(
            one(line).unwrap_err(),
            format!("unable to parse '{line}': {reason}"),
            "{line:?}"
        );
    }
}

#[test]
fn float_spellings() {
    let point =
        one("f a=1e3,b=-0.5,c=.5,d=1E-2,e=1.5e+2,g=-0,h=123456789012345678 1").expect("parse");
    let values: Vec<_> = point.fields.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(values[0], FieldValue::Float(1000.0));
    assert_eq!(values[2], FieldValue::Float(0.5));
    assert_eq!(values[4], FieldValue::Float(150.0));
    assert_eq!(values[6], FieldValue::Float(123456789012345678.0));
}

#[test]
fn comments_blank_lines_crlf_and_line_numbers() {
    let body = b"# c\n\nc v=1 1\n   \nc v=2 2\nbad\n# end";
    let batch = parse(body, Precision::Nanosecond, 0);
    assert_eq!(batch.points.len(), 2);
    assert_eq!(batch.points[1].line, 5);
    assert_eq!(batch.errors[0].line, 6);
    assert_eq!(batch.errors[0].reason, "missing fields");
}

#[test]
fn newline_inside_a_string_value_stays_in_the_line() {
    let batch = parse(b"m s=\"a\nb\" 1\nm v=2 2", Precision::Nanosecond, 0);
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert_eq!(
        batch.points[0].fields[0].1,
        FieldValue::String(Cow::from("a\nb"))
    );
}

#[test]
fn duplicate_field_keeps_last_value() {
    let point = one("q v=1,v=2 1").expect("parse");
    assert_eq!(point.fields, vec![(Cow::from("v"), FieldValue::Float(2.0))]);
}

#[test]
fn precision_multiplies_and_overflow_is_refused() {
    let batch = parse(b"m v=1 1704067200", Precision::Second, 0);
    assert_eq!(batch.points[0].timestamp, 1_704_067_200_000_000_000);
    let batch = parse(b"m v=1 9223372036854", Precision::Hour, 0);
    assert_eq!(batch.errors.len(), 1);
}

#[test]
fn series_key_round_trips_through_the_parser() {
    let point = one(r"c\ pu,h\=k=a\,b v=1 1").expect("parse");
    let key = series_key(&point.measurement, &point.tags);
    let line = format!("{key} v=1 1");
    let again = one(&line).expect("reparse");
    assert_eq!(again.measurement, point.measurement);
    assert_eq!(again.tags, point.tags);
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ ,=\\-\\.]{1,12}".prop_filter("no leading #", |s| {
        !s.starts_with('#') && !s.ends_with('\\')
    })
}

fn escape(text: &str, special: &[char]) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

proptest! {
    #[test]
    fn generated_points_round_trip(
        measurement in name(),
        tags in proptest::collection::btree_map(name(), name(), 0..4),
        float in proptest::num::f64::NORMAL,
        integer in any::<i64>(),
        text in "[a-z \"\\\\,=]{0,10}",
        timestamp in -1_000_000_000_000_000_000i64..1_000_000_000_000_000_000,
    ) {
        let mut line = escape(&measurement, &[',', ' ']);
        for (k, v) in &tags {
            line.push(',');
            line.push_str(&escape(k, &[',', '=', ' ']));
            line.push('=');
            line.push_str(&escape(v, &[',', '=', ' ']));
        }
        line.push_str(&format!(" f={float:?},i={integer}i,s=\"{}\" {timestamp}", escape(&text, &['"', '\\'])));
        let point = one(&line).map_err(TestCaseError::fail)?;
        prop_assert_eq!(point.measurement.as_ref(), measurement.as_str());
        let expected: Vec<(String, String)> = tags.into_iter().collect();
        let got: Vec<(String, String)> = point.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(&point.fields[0].1, &FieldValue::Float(float));
        prop_assert_eq!(&point.fields[1].1, &FieldValue::Integer(integer));
        prop_assert_eq!(&point.fields[2].1, &FieldValue::String(Cow::from(text)));
        prop_assert_eq!(point.timestamp, timestamp);
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&body, Precision::Nanosecond, 0);
    }

    #[test]
    fn mutated_lines_never_panic(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
        cut in 0usize..200,
    ) {
        let mut body = br#"cpu\ x,host=a\,b,zone=c\=d v=1.5,i=3i,u=4u,s="q\"x\\ y",b=t 1704067200000000000
m,t=1 s="multi
line",v=-1e-3 12"#.to_vec();
        for (at, byte) in flips {
            let at = at % body.len();
            body[at] = byte;
        }
        body.truncate(cut.max(1).min(body.len()));
        for precision in [Precision::Nanosecond, Precision::Hour] {
            let _ = parse(&body, precision, i64::MAX);
        }
    }
}
