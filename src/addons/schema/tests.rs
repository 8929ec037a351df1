use super::*;
use serde_json::json;

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["amount"],
        "additionalProperties": false,
        "properties": {
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"},
            "note": {"type": "string", "maxLength": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "opts": {"type": "object", "properties": {"fast": {"type": "boolean", "default": true}}}
        }
    })
}

#[test]
fn defaults_then_validation() {
    let v = normalize(&schema(), json!({"amount": 3}), "data").unwrap();
    assert_eq!(v, json!({"amount": 3, "currency": "EUR", "opts": {"fast": true}}));
}

#[test]
fn errors_name_the_path() {
    let s = schema();
    let cases = [
        (json!({}), "data.amount: required"),
        (json!({"amount": "x"}), "data.amount: expected number"),
        (json!({"amount": 0}), "must be more than 0"),
        (json!({"amount": 1, "currency": "GBP"}), "data.currency"),
        (json!({"amount": 1, "note": "toolong"}), "data.note: longer than 5"),
        (json!({"amount": 1, "tags": ["a", 1]}), "data.tags[1]: expected string"),
        (json!({"amount": 1, "tags": ["a", "b", "c"]}), "more than 2 items"),
        (json!({"amount": 1, "bogus": 1}), "data.bogus: unknown property"),
        (json!([1]), "data: expected object"),
    ];
    for (v, want) in cases {
        let e = normalize(&s, v.clone(), "data").unwrap_err();
        assert!(e.contains(want), "{v}: {e}");
    }
}

#[test]
fn what_cannot_be_validated_is_refused() {
    check_schema(&schema(), "s").unwrap();
    // A typo is not taken for an annotation.
    let e = check_schema(&json!({"properties": {"a": {"type": "string", "minLenght": 3}}}), "actions[0].input_schema").unwrap_err();
    assert!(e.contains("actions[0].input_schema.properties.a") && e.contains("minLenght"), "{e}");
    let e = check_schema(&json!({"type": "text"}), "s").unwrap_err();
    assert!(e.starts_with("s") && e.contains("text"), "{e}");
    let e = check_schema(&json!({"properties": {"a": {"type": "number", "default": "x"}}}), "s").unwrap_err();
    assert!(e.contains("default") && e.contains("s.properties.a.default"), "{e}");
    // Nothing is fetched: a remote (or file) `$ref` cannot be resolved, so it is refused.
    for r in ["https://example.com/schema.json", "file:///etc/passwd", "#/$defs/missing"] {
        let e = check_schema(&json!({"properties": {"a": {"$ref": r}}}), "s").unwrap_err();
        assert!(e.contains("cannot be used"), "{r}: {e}");
    }
    // `pattern` runs on the linear-time engine: look-around is refused, not backtracked.
    let e = check_schema(&json!({"type": "string", "pattern": "^(?=a)a+$"}), "s").unwrap_err();
    assert!(e.contains("cannot be used"), "{e}");
    // What the meta-schema refuses names the path inside the schema.
    let e = check_schema(&json!({"type": "object", "oneOf": []}), "actions[0].input_schema").unwrap_err();
    assert!(e.starts_with("actions[0].input_schema.oneOf: "), "{e}");
    let e = check_schema(&json!(3), "s").unwrap_err();
    assert!(e.contains("must be an object"), "{e}");
}

#[test]
fn integers() {
    assert!(validate(&json!({"type": "integer"}), &json!(3), "x").is_ok());
    assert!(validate(&json!({"type": "integer"}), &json!(3.0), "x").is_ok());
    assert!(validate(&json!({"type": "integer"}), &json!(3.5), "x").is_err());
}

/// Each keyword the old 22-keyword subset lacked, accepted at registration and enforced.
#[test]
fn the_full_vocabulary_is_enforced() {
    let check = |s: Value, good: Value, bad: Value, want: &str| {
        check_schema(&s, "s").unwrap_or_else(|e| panic!("{s}: {e}"));
        validate(&s, &good, "data").unwrap_or_else(|e| panic!("{s} refused {good}: {e}"));
        let e = validate(&s, &bad, "data").expect_err(&format!("{s} took {bad}"));
        assert!(e.contains(want), "{s} / {bad}: {e}");
    };
    check(
        json!({"properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}}),
        json!({"sku": "ABC-12"}),
        json!({"sku": "abc"}),
        "data.sku: does not match the pattern",
    );
    check(
        json!({"properties": {"p": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]}}}),
        json!({"p": 3}),
        json!({"p": 12}),
        "data.p: matches more than one of the `oneOf`",
    );
    check(
        json!({"oneOf": [{"type": "integer"}, {"type": "string"}]}),
        json!("x"),
        json!(true),
        "data: matches none of the `oneOf` choices",
    );
    check(
        json!({"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 2}]}),
        json!("xy"),
        json!("x"),
        "matches none of the `anyOf`",
    );
    check(json!({"allOf": [{"type": "integer"}, {"minimum": 5}]}), json!(6), json!(4), "data: 4 is less than the minimum 5");
    check(json!({"not": {"const": "root"}}), json!("alice"), json!("root"), "must not match the `not` schema");
    check(
        json!({"$defs": {"money": {"type": "number", "minimum": 0}}, "properties": {"price": {"$ref": "#/$defs/money"}}}),
        json!({"price": 3}),
        json!({"price": -1}),
        "data.price: -1 is less than the minimum 0",
    );
    check(
        json!({"if": {"properties": {"kind": {"const": "card"}}}, "then": {"required": ["pan"]}, "else": {"required": ["iban"]}}),
        json!({"kind": "card", "pan": "4111"}),
        json!({"kind": "sepa"}),
        "data.iban: required property is missing",
    );
    check(json!({"type": "array", "uniqueItems": true}), json!([1, 2]), json!([1, 2, 1]), "data: the items must be unique");
    check(json!({"multipleOf": 0.5}), json!(2.5), json!(2.3), "data: 2.3 is not a multiple of 0.5");
    check(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
        json!(["a", 1]),
        json!(["a", "b"]),
        "data[1]: expected integer, got string",
    );
    check(
        json!({"type": "object", "propertyNames": {"pattern": "^[a-z_]+$"}}),
        json!({"ok_name": 1}),
        json!({"Bad-Name": 1}),
        "data: the property name \"Bad-Name\": does not match the pattern",
    );
    check(json!({"prefixItems": [{"type": "string"}], "items": false}), json!(["a"]), json!(["a", 1]), "data[1]: no value is allowed here");
}

/// 1 and 1.0 are the same number, in `enum` and `const` alike.
#[test]
fn enum_and_const_compare_numbers_by_value() {
    for (s, v) in [
        (json!({"enum": [1, 2]}), json!(1.0)),
        (json!({"enum": [1.0, "x"]}), json!(1)),
        (json!({"const": 1}), json!(1.0)),
        (json!({"const": {"n": [2.0]}}), json!({"n": [2]})),
    ] {
        check_schema(&s, "s").unwrap();
        validate(&s, &v, "data").unwrap_or_else(|e| panic!("{s} refused {v}: {e}"));
    }
    assert!(validate(&json!({"enum": [1, 2]}), &json!(1.5), "data").unwrap_err().contains("data: 1.5 is not one of [1,2]"));
    assert!(validate(&json!({"const": 1}), &json!(2), "data").unwrap_err().contains("data: must be 1"));
}
