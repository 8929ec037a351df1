//! What validating an action's input costs on the execute path: addond's defaults filled in,
//! then the compiled JSON Schema validator (found by the schema's text), on a typical
//! checkout-style input. Run: `cargo bench --bench schema`.

use std::hint::black_box;

use addond::addons::schema::{check_schema, normalize};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

/// An action input schema of the size manifests use: a dozen properties, nested objects,
/// a list, an enum, bounds and a default.
pub fn typical_schema() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "amount", "items"],
        "additionalProperties": false,
        "properties": {
            "order_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"], "default": "EUR"},
            "customer": {
                "type": "object",
                "required": ["email"],
                "properties": {
                    "email": {"type": "string", "maxLength": 254},
                    "name": {"type": "string", "maxLength": 100}
                }
            },
            "items": {
                "type": "array", "minItems": 1, "maxItems": 100,
                "items": {
                    "type": "object",
                    "required": ["sku", "qty"],
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
                }
            },
            "note": {"type": "string", "maxLength": 500},
            "express": {"type": "boolean", "default": false}
        }
    })
}

pub fn typical_input() -> Value {
    json!({
        "order_id": "ord_7f3a9c",
        "amount": 129.5,
        "customer": {"email": "kim@example.com", "name": "Kim"},
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}, {"sku": "C-3", "qty": 4}],
        "note": "leave at the door"
    })
}

fn bench(c: &mut Criterion) {
    let schema = typical_schema();
    check_schema(&schema, "input_schema").expect("a valid schema");
    let input = typical_input();
    c.bench_function("schema/normalize_typical_input", |b| {
        b.iter(|| normalize(black_box(&schema), black_box(input.clone()), "data").expect("valid"))
    });
    c.bench_function("schema/clone_only", |b| b.iter(|| black_box(input.clone())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
