//! Tokenizer tests on a small synthetic byte-level BPE vocabulary built here: encoding with
//! each pre-tokenizer family, special/added tokens, BOS, decoding, stream decoding of
//! characters split across tokens, HF `tokenizer.json` round trip, and errors.

use models::tokenizer::gguf::byte_to_char;
use models::tokenizer::{
    GgufTokenizerSpec, StreamDecoder, Tokenizer, TokenizerError, tokenizer_from_gguf,
};

/// Byte-level spelling of `s` (what a GGUF vocabulary stores).
fn spell(s: &str) -> String {
    let t = byte_to_char();
    s.bytes().map(|b| t[b as usize]).collect()
}

/// Control tokens 0..3, user-defined `<think>` 3, the 256 byte tokens 4..260, then one token
/// per merge, in merge order.
fn spec(pre: Option<&str>, merges_plain: &[(&str, &str)]) -> GgufTokenizerSpec {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut token_types = vec![3, 3, 3, 4];
    tokens.extend(byte_to_char().iter().map(|c| c.to_string()));
    token_types.extend(std::iter::repeat_n(1, 256));
    let mut merges = Vec::new();
    for (a, b) in merges_plain {
        let (a, b) = (spell(a), spell(b));
        merges.push(format!("{a} {b}"));
        let joined = format!("{a}{b}");
        if !tokens.contains(&joined) {
            tokens.push(joined);
            token_types.push(1);
        }
    }
    GgufTokenizerSpec {
        model: "gpt2".into(),
        pre: pre.map(str::to_string),
        tokens,
        merges,
        token_types,
        bos_id: Some(1),
        eos_id: Some(2),
        add_bos: false,
        chat_template: Some("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into()),
    }
}

const MERGES: &[(&str, &str)] = &[
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("hell", "o"),
    (" ", "w"),
    ("o", "r"),
    (" w", "or"),
    (" wor", "l"),
    (" worl", "d"),
    (" ", " "),
    ("1", "2"),
];

fn tok(pre: Option<&str>) -> Tokenizer {
    let mut s = spec(pre, MERGES);
    // Plus the first two bytes of most emoji (F0 9F) as one token: spelled directly, since
    // its sides are bytes, not characters.
    let t = byte_to_char();
    let (a, b) = (t[0xF0].to_string(), t[0x9F].to_string());
    s.merges.push(format!("{a} {b}"));
    s.tokens.push(format!("{a}{b}"));
    s.token_types.push(1);
    tokenizer_from_gguf(&s).expect("synthetic tokenizer builds")
}

fn id(t: &Tokenizer, plain: &str) -> u32 {
    t.token_to_id(&spell(plain))
        .unwrap_or_else(|| panic!("no token {plain:?}"))
}

#[test]
fn encodes_with_merges_and_decodes_back() {
    let t = tok(Some("gpt-2"));
    let ids = t.encode("hello world", false).unwrap();
    assert_eq!(ids, vec![id(&t, "hello"), id(&t, " world")]);
    assert_eq!(t.decode(&ids, false).unwrap(), "hello world");
    assert_eq!(t.vocab_size(), 4 + 256 + MERGES.len() + 1);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    // Stop ids: EOS plus the known end-of-turn markers present (<|endoftext|>).
    assert_eq!(t.stop_ids(), &[0, 2]);
    assert!(t.is_stop(2) && t.is_stop(0) && !t.is_stop(1));
}

#[test]
fn pre_tokenizer_family_decides_digit_and_space_splits() {
    // GPT-2: " 12" is one pre-token, so "1"+"2" merge; the double space splits " " + " 12".
    let g = tok(Some("gpt-2"));
    assert_eq!(
        g.encode("a  12", false).unwrap(),
        vec![id(&g, "a"), id(&g, " "), id(&g, " "), id(&g, "12")]
    );
    // SmolLM (StarCoder-style): every digit alone first, so "  " stays together and merges.
    let s = tok(Some("smollm"));
    assert_eq!(
        s.encode("a  12", false).unwrap(),
        vec![id(&s, "a"), id(&s, "  "), id(&s, "1"), id(&s, "2")]
    );
    // Qwen2: digits alone too; a letter run takes one leading non-letter.
    let q = tok(Some("qwen2"));
    assert_eq!(
        q.encode("12", false).unwrap(),
        vec![id(&q, "1"), id(&q, "2")]
    );
    // Llama 3: digits in threes; "12" is one pre-token and merges.
    let l = tok(Some("llama-bpe"));
    assert_eq!(l.encode("12", false).unwrap(), vec![id(&l, "12")]);
    for t in [
        &g,
        &s,
        &q,
        &l,
        &tok(None),
        &tok(Some("falcon")),
        &tok(Some("tekken")),
        &tok(Some("gpt-4o")),
    ] {
        let text = "Hello, World! It's 2024: naïve   café\n\n\tx = [1, 22, 333]; 😀👍🏽";
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn special_tokens_match_whole_and_skip_on_request() {
    let t = tok(Some("smollm"));
    let ids = t
        .encode("<|im_start|>hello<|im_end|><think>", false)
        .unwrap();
    assert_eq!(ids, vec![1, id(&t, "hello"), 2, 3]);
    assert_eq!(
        t.decode(&ids, false).unwrap(),
        "<|im_start|>hello<|im_end|><think>"
    );
    // Control tokens are skipped, the user-defined one is kept (as llama.cpp prints it).
    assert_eq!(t.decode(&ids, true).unwrap(), "hello<think>");
    // A broken marker is ordinary text.
    let ids = t.encode("<|im_start", false).unwrap();
    assert!(!ids.contains(&1));
    assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start");
}

#[test]
fn add_bos_follows_the_spec() {
    let t = tok(Some("gpt-2"));
    assert_eq!(t.encode("hello", true).unwrap(), vec![id(&t, "hello")]);
    let mut s = spec(Some("gpt-2"), &[("h", "i")]);
    s.add_bos = true;
    let t = tokenizer_from_gguf(&s).unwrap();
    assert_eq!(t.encode("hi", true).unwrap(), vec![1, id(&t, "hi")]);
    assert_eq!(t.encode("hi", false).unwrap(), vec![id(&t, "hi")]);
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let t = tok(Some("gpt-2"));
    let text = "hello 😀 world🇫🇷!";
    let ids = t.encode(text, false).unwrap();
    // The emoji is cut into byte tokens: "ðŁ" (F0 9F) then one token per remaining byte.
    let emoji_start = t
        .token_to_id(&format!("{}{}", byte_to_char()[0xF0], byte_to_char()[0x9F]))
        .unwrap();
    assert!(ids.contains(&emoji_start));
    let mut dec = StreamDecoder::new(false);
    let mut out = String::new();
    let mut held_once = false;
    for &i in &ids {
        match dec.push(&t, i).unwrap() {
            Some(delta) => {
                assert!(
                    !delta.contains('\u{FFFD}'),
                    "delta {delta:?} splits a character"
                );
                out.push_str(&delta);
            }
            None => held_once = true,
        }
    }
    assert!(held_once, "an incomplete emoji must be held back");
    out.push_str(&dec.finish(&t).unwrap());
    assert_eq!(out, text);
    // After the emoji's first token alone, nothing is emitted.
    let mut dec = t.stream_decoder(false);
    assert_eq!(dec.push(&t, emoji_start).unwrap(), None);
    assert_eq!(dec.pending(), 1);
    // finish() flushes an incomplete character as U+FFFD.
    assert_eq!(dec.finish(&t).unwrap(), "\u{FFFD}");
}

#[test]
fn stream_decoder_skips_special_tokens() {
    let t = tok(Some("gpt-2"));
    let mut dec = StreamDecoder::new(true);
    let ids = [1, id(&t, "hello"), 2, id(&t, " world"), 0];
    assert_eq!(
        dec.push_all(&t, &ids).unwrap() + &dec.finish(&t).unwrap(),
        "hello world"
    );
    let mut dec = StreamDecoder::new(false);
    assert_eq!(
        dec.push_all(&t, &ids).unwrap(),
        "<|im_start|>hello<|im_end|> world<|endoftext|>"
    );
}

#[test]
fn hf_tokenizer_json_round_trip() {
    let t = tok(Some("smollm"));
    let dir = std::env::temp_dir().join(format!("inflight-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    t.inner().save(&path, false).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "chat_template": "{{ messages[0].content }}"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 3]}"#,
    )
    .unwrap();
    let h = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let text = "<|im_start|>hello  12 world 😀<|im_end|>";
    assert_eq!(h.encode(text, true).unwrap(), t.encode(text, true).unwrap());
    assert_eq!((h.bos_id(), h.eos_id()), (Some(1), Some(2)));
    assert_eq!(h.stop_ids(), &[0, 2, 3]);
    assert_eq!(h.vocab_size(), t.vocab_size());
    let msgs = [models::tokenizer::ChatMessage::new("user", "hi")];
    assert_eq!(h.apply_chat_template(&msgs, false).unwrap(), "hi");
}

#[test]
fn errors_name_what_is_wrong() {
    let mut s = spec(Some("gpt-2"), &[]);
    s.model = "llama".into();
    let e = tokenizer_from_gguf(&s).unwrap_err();
    assert!(
        matches!(&e, TokenizerError::UnsupportedModel(m) if m == "llama"),
        "{e}"
    );
    assert!(e.to_string().contains("\"llama\""), "{e}");

    let s = spec(Some("no-such-pre"), &[]);
    let e = tokenizer_from_gguf(&s).unwrap_err();
    assert!(
        matches!(&e, TokenizerError::UnknownPre(p) if p == "no-such-pre"),
        "{e}"
    );
    assert!(e.to_string().contains("no-such-pre"));

    let mut s = spec(Some("gpt-2"), &[]);
    s.token_types.pop();
    assert!(matches!(
        tokenizer_from_gguf(&s),
        Err(TokenizerError::InvalidSpec(_))
    ));
    let mut s = spec(Some("gpt-2"), &[]);
    s.merges.push("nospace".into());
    let e = tokenizer_from_gguf(&s).unwrap_err();
    assert!(e.to_string().contains("nospace"), "{e}");
    let mut s = spec(Some("gpt-2"), &[]);
    s.bos_id = Some(100_000);
    assert!(matches!(
        tokenizer_from_gguf(&s),
        Err(TokenizerError::InvalidSpec(_))
    ));
    let mut s = spec(Some("gpt-2"), &[]);
    s.merges.push(format!("{} {}", spell("x"), spell("yz")));
    assert!(
        tokenizer_from_gguf(&s).is_err(),
        "a merge whose side is not a token"
    );

    let t = tok(Some("gpt-2"));
    let e = t.decode(&[5, 1_000_000], false).unwrap_err();
    assert!(
        matches!(e, TokenizerError::IdOutOfRange { id: 1_000_000, .. }),
        "{e}"
    );
    let e = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e}");
}
