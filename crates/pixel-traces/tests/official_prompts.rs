//! RL records give the same first user message as the official data loader
//! (fixture: `scripts/gen_traces_fixtures.py`, which runs `PromptDataset.preprocess_data` as written).

use std::path::Path;

use pixel_traces::load::{OnError, parse_records};
use pixel_traces::{DatasetRoot, RlRecord};

#[test]
fn prompt_messages_match_the_official_loader() {
    let text = include_str!("fixtures/official_prompts.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    assert!(cases.len() >= 7);
    let root = DatasetRoot::new("/data");
    for case in &cases {
        let record_line = serde_json::to_string(&case["record"]).unwrap();
        let loaded = parse_records::<RlRecord>(
            &record_line,
            Path::new("fixture.jsonl"),
            &root,
            OnError::Fail,
        )
        .unwrap();
        let record = &loaded.records[0].1;
        let ours = serde_json::to_value(record.prompt_message()).unwrap();
        assert_eq!(ours, case["chat"][0], "record {}", case["record"]);
        // The loader appends the qid as a second chat entry; ours keeps it as text.
        let qid = &case["chat"][1]["qid"];
        let qid_text = qid
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| qid.to_string());
        assert_eq!(record.qid, qid_text);
    }
}
