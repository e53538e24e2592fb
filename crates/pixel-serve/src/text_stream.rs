//! Incremental detokenization of one generated row, with stop strings.
//!
//! Tokens arrive one by one; text is released as soon as it is complete UTF-8 and cannot be the start of a
//! stop string. A window of recent tokens is decoded twice (with and without the newest token) and the
//! difference is the new text, so a multi-byte character split across tokens is released whole, and the
//! work per token stays constant. The concatenation of the released pieces is the final text.

use pixel_vlm::tokenizer::QwenTokenizer;

/// The text of one row as it is generated.
pub(crate) struct TextStream<'t> {
    tokenizer: &'t QwenTokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    text: String,
    emitted: usize,
    stop: Vec<String>,
    stopped: bool,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t QwenTokenizer, stop: &[String]) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            text: String::new(),
            emitted: 0,
            stop: stop.to_vec(),
            stopped: false,
        }
    }

    /// Whether a stop string was met (later tokens are ignored).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Ids the tokenizer lacks are dropped before decoding (as in pixel-agent's LocalEngine), so
        // decoding cannot fail on them; any other failure yields no text rather than an error.
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    /// Adds a sampled token (not the end-of-turn token); returns the text released by it.
    pub fn push(&mut self, token: u32) -> String {
        if self.stopped || self.tokenizer.id_to_token(token).is_none() {
            return String::new();
        }
        self.ids.push(token);
        let before = self.decode(&self.ids[self.prefix..self.read]);
        let after = self.decode(&self.ids[self.prefix..]);
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(piece) = after.strip_prefix(before.as_str()) {
                self.text.push_str(piece);
            } else {
                // Decoding is not prefix-stable here: fall back to the whole row.
                self.text = self.decode(&self.ids);
                self.emitted = self.emitted.min(self.text.len());
                while !self.text.is_char_boundary(self.emitted) {
                    self.emitted -= 1;
                }
            }
            self.prefix = self.read;
            self.read = self.ids.len();
        }
        self.release(false)
    }

    /// Ends the row: releases what is left (an incomplete character included) and returns it.
    pub fn finish(&mut self) -> String {
        if !self.stopped && self.read < self.ids.len() {
            let before = self.decode(&self.ids[self.prefix..self.read]);
            let after = self.decode(&self.ids[self.prefix..]);
            if let Some(piece) = after.strip_prefix(before.as_str()) {
                self.text.push_str(piece);
            }
            self.read = self.ids.len();
        }
        self.release(true)
    }

    /// The whole text so far (released or held back).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Cuts at a stop string if one appeared; returns the newly releasable text.
    fn release(&mut self, last: bool) -> String {
        if !self.stopped && !self.stop.is_empty() {
            let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
            let mut from = self.emitted.saturating_sub(longest);
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            let hit = self
                .stop
                .iter()
                .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
                .min();
            if let Some(at) = hit {
                self.text.truncate(at);
                self.stopped = true;
            }
        }
        let safe = if self.stopped || last {
            self.text.len()
        } else {
            self.text.len() - self.held_back()
        };
        let piece = self
            .text
            .get(self.emitted..safe)
            .unwrap_or_default()
            .to_owned();
        self.emitted = self.emitted.max(safe);
        piece
    }

    /// Bytes at the end of the text that could begin a stop string.
    fn held_back(&self) -> usize {
        let text = &self.text;
        let mut keep = 0;
        for stop in &self.stop {
            for (i, _) in text.char_indices().rev().take(stop.len()) {
                let tail = &text[i..];
                if tail.len() < stop.len() && stop.starts_with(tail) {
                    keep = keep.max(tail.len());
                }
            }
        }
        keep.min(text.len() - self.emitted.min(text.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tokenizer() -> QwenTokenizer {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../pixel-vlm/tests/fixtures/tokenizer");
        QwenTokenizer::from_dir(dir).expect("the test tokenizer")
    }

    /// Streams `text`'s tokens; returns the pieces and the final text.
    fn stream(tokenizer: &QwenTokenizer, text: &str, stop: &[&str]) -> (Vec<String>, String) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new(tokenizer, &stop);
        let mut pieces: Vec<String> = tokenizer
            .encode(text)
            .unwrap()
            .into_iter()
            .map(|id| s.push(id))
            .collect();
        pieces.push(s.finish());
        (pieces, s.text().to_owned())
    }

    #[test]
    fn pieces_add_up_to_the_decoded_text_and_never_split_a_character() {
        let tok = tokenizer();
        let text = "Zoom in: the sign says «ÉTÉ» 日本語 — done.";
        let (pieces, whole) = stream(&tok, text, &[]);
        assert_eq!(
            whole,
            tok.decode(&tok.encode(text).unwrap(), false).unwrap()
        );
        assert_eq!(pieces.concat(), whole);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert!(
            pieces.iter().filter(|p| !p.is_empty()).count() > 5,
            "{pieces:?}"
        );
    }

    #[test]
    fn stop_string_ends_the_text_before_it_even_across_tokens() {
        let tok = tokenizer();
        let (pieces, whole) = stream(&tok, "first part STOP second part", &["STOP", "never"]);
        assert_eq!(whole, "first part ");
        assert_eq!(pieces.concat(), "first part ");
        assert!(pieces.iter().all(|p| !p.contains('S')), "{pieces:?}");
    }

    #[test]
    fn text_that_only_begins_a_stop_string_is_released_at_the_end() {
        let tok = tokenizer();
        let (pieces, whole) = stream(&tok, "ends with STO", &["STOP"]);
        assert_eq!(whole, "ends with STO");
        assert_eq!(pieces.concat(), whole);
        assert_eq!(pieces.last().map(String::as_str), Some("STO"));
    }

    #[test]
    fn ids_the_tokenizer_lacks_are_skipped() {
        let tok = tokenizer();
        let mut s = TextStream::new(&tok, &[]);
        assert_eq!(s.push(u32::MAX), "");
        let ids = tok.encode("ok").unwrap();
        let text: String = ids.iter().map(|&id| s.push(id)).collect::<String>() + &s.finish();
        assert_eq!(text, "ok");
    }
}
