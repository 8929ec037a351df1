use super::*;

#[test]
fn hashes_are_canonical() {
    let a = json!({"b": 1, "a": [1, 2]});
    let b: Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
    assert_eq!(canonical_hash(&[&a, &json!(null)]), canonical_hash(&[&b, &json!(null)]));
    assert_ne!(canonical_hash(&[&a, &json!(1)]), canonical_hash(&[&a, &json!(2)]));
}

#[test]
fn frame_escapes_closing_tags_and_sets_csp() {
    let (html, csp) = frame_document(&json!({"html": "<p>x</p>", "css": "p{}", "javascript": "a='</script><script>evil()'"}), "n0nce");
    assert!(!html.contains("</script><script>evil"));
    assert!(html.contains("<script nonce=\"n0nce\">"));
    assert!(csp.starts_with("sandbox allow-scripts;"));
    assert!(csp.contains("default-src 'none'"));
}
