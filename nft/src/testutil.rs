//! Helpers for the rulesets' unit tests: read a generated batch back as JSON.

use serde_json::{json, Value};

/// The statement lists of the rules of `chain` in `table`, in order.
pub fn rules(v: &Value, table: &str, chain: &str) -> Vec<Vec<Value>> {
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o["add"].get("rule"))
        .filter(|r| r["chain"] == chain)
        .map(|r| {
            assert_eq!(r["table"], table);
            assert_eq!(r["family"], "inet");
            r["expr"].as_array().expect("expr array").clone()
        })
        .collect()
}

/// A match statement as nft JSON.
pub fn m(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"left": left, "right": right, "op": op}})
}

/// `meta <key> == right`
pub fn meta(key: &str, right: Value) -> Value {
    m(json!({"meta": {"key": key}}), "==", right)
}

/// `<proto> <field> == right`
pub fn payload(proto: &str, field: &str, right: Value) -> Value {
    m(
        json!({"payload": {"protocol": proto, "field": field}}),
        "==",
        right,
    )
}

/// The chains the batch adds, in order.
pub fn chains(v: &Value) -> Vec<&Value> {
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o["add"].get("chain"))
        .collect()
}
