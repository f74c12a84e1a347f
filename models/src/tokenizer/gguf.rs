//! Rebuilding a GGUF file's tokenizer (`tokenizer.ggml.*`) as a `tokenizers` byte-level BPE.
//!
//! Takes plain data ([`GgufTokenizerSpec`]), not a GGUF reader. What is built:
//! - model: BPE from `tokens` (id = index) and `merges` ("left right", rank = index), no unk,
//!   no byte fallback; `ignore_merges` where llama.cpp sets it (llama-3-style vocabularies,
//!   tekken): a pre-token that is itself a token is taken whole;
//! - pre-tokenizer: llama.cpp's split regexes for the `pre` value, applied in order, each
//!   keeping matches and the gaps between them (HF `Split`, behaviour `Isolated`), then the
//!   GPT-2 byte-to-character mapping (HF `ByteLevel` without its own regex);
//! - decoder: `ByteLevel`;
//! - added tokens: token type 3 (control) as special tokens, type 4 (user-defined) as plain
//!   added tokens; both are matched whole in text, only control ones are dropped by
//!   `decode(.., skip_special = true)` (llama.cpp prints user-defined tokens always);
//! - post-processor: prepend BOS when `add_bos` (what `encode(.., add_special = true)` adds).
//!
//! `pre`: the values llama.cpp knows for the split families below; an unknown value is an
//! error naming it ([`TokenizerError::UnknownPre`]) rather than a silent GPT-2 fallback,
//! because a wrong split gives plausible but wrong ids. A missing `pre` (files converted before
//! llama.cpp recorded it) gets llama.cpp's "default" split, as llama.cpp does.

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{Result, Tokenizer, TokenizerError, backend};

/// The tokenizer fields of a GGUF file, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`, e.g. "gpt2" (byte-level BPE) or "llama" (sentencepiece).
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. "smollm", "qwen2", "llama-bpe", "gpt-2".
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token text by id (byte-level spelling for BPE).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`: "left right", best first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte. Empty means all normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// GGUF token type of control tokens (`<|im_start|>`).
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined added tokens (`<think>`).
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

// The GPT-2 split: contractions, optional space + letters, optional space + digits, optional
// space + other symbols, whitespace not followed by a non-space, and remaining whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
// Llama 3 (tiktoken cl100k-like): case-insensitive contractions, a letter run with one leading
// non-letter/non-digit (not a newline), digits in groups of up to three, symbols with trailing
// newlines, newline runs, whitespace.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// Qwen2: as Llama 3 but every digit alone.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// Mistral tekken: case-aware letter runs, single digits, symbols with newlines or slashes.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// GPT-4o (o200k) / Llama 4: case-aware letter runs with contractions attached, 1-3 digits.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SINGLE_DIGIT: &str = r"\p{N}";

/// The split regexes (applied in order) for a `tokenizer.ggml.pre` value, and whether the
/// vocabulary takes a pre-token that is a whole token without merging (`ignore_merges`).
pub fn pre_tokenizer_regexes(pre: Option<&str>) -> Result<(Vec<&'static str>, bool)> {
    let Some(pre) = pre else {
        // llama.cpp's "default" (no pre recorded): punctuation runs, GPT-2, digit runs, triples.
        return Ok((
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ));
    };
    let split = match pre {
        "default" => return pre_tokenizer_regexes(None),
        "gpt-2" | "gpt2" | "phi-2" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" => (vec![GPT2], false),
        // StarCoder-style vocabularies: every digit alone, then GPT-2.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (vec![SINGLE_DIGIT, GPT2], false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => (vec![LLAMA3], true),
        "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => (vec![LLAMA3], false),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" | "kormo" => (vec![QWEN2], false),
        "falcon" => (
            vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
            false,
        ),
        "tekken" => (vec![TEKKEN], true),
        "gpt-4o" | "llama4" | "minimax-m2" => (vec![GPT4O], false),
        other => return Err(TokenizerError::UnknownPre(other.to_string())),
    };
    Ok(split)
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the others
/// (controls, space, DEL, NBSP, soft hyphen) map to U+0100.. in byte order.
pub fn byte_to_char() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are chars");
            next += 1;
            c
        };
    }
    table
}

/// Rebuilds a GGUF tokenizer; see the module docs for what is built and which `pre` values are
/// known.
pub fn tokenizer_from_gguf(spec: &GgufTokenizerSpec) -> Result<Tokenizer> {
    if spec.model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel(spec.model.clone()));
    }
    let (regexes, ignore_merges) = pre_tokenizer_regexes(spec.pre.as_deref())?;
    let n = spec.tokens.len();
    if n == 0 {
        return Err(TokenizerError::InvalidSpec("no tokens".into()));
    }
    if !spec.token_types.is_empty() && spec.token_types.len() != n {
        return Err(TokenizerError::InvalidSpec(format!(
            "{} token types for {n} tokens",
            spec.token_types.len()
        )));
    }
    for (what, id) in [("bos", spec.bos_id), ("eos", spec.eos_id)] {
        if let Some(id) = id.filter(|&id| id as usize >= n) {
            return Err(TokenizerError::InvalidSpec(format!(
                "{what} id {id} >= {n} tokens"
            )));
        }
    }
    if spec.add_bos && spec.bos_id.is_none() {
        return Err(TokenizerError::InvalidSpec(
            "add_bos is set but there is no bos id".into(),
        ));
    }
    let token_type = |i: usize| spec.token_types.get(i).copied().unwrap_or(1);
    let is_added = |t: i32| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED;

    // Vocabulary. Ordinary tokens must be spelled in the byte alphabet; one that is not (a
    // raw-text spelling) is respelled. Added tokens keep their raw text: that is what the text
    // matcher looks for, and their id must come from here, not be appended past the end.
    let table = byte_to_char();
    let mut alphabet = [false; 0x144];
    for &c in &table {
        alphabet[c as usize] = true;
    }
    let in_alphabet = |s: &str| {
        s.chars()
            .all(|c| (c as usize) < alphabet.len() && alphabet[c as usize])
    };
    let mut vocab = Vocab::default();
    for (i, tok) in spec.tokens.iter().enumerate() {
        let key = if is_added(token_type(i)) || in_alphabet(tok) {
            tok.clone()
        } else {
            tok.bytes().map(|b| table[b as usize]).collect()
        };
        // Later duplicates win, as in llama.cpp's text-to-id map.
        vocab.insert(key, i as u32);
    }

    let mut merges = Vec::with_capacity(spec.merges.len());
    for (rank, m) in spec.merges.iter().enumerate() {
        // Split at the first space after the first character (a token never starts a merge
        // with a space in byte-level spelling, but be as lenient as llama.cpp).
        let cut = m
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(i, _)| i);
        let Some(cut) = cut else {
            return Err(TokenizerError::InvalidSpec(format!(
                "merge {rank} {m:?} has no space"
            )));
        };
        let (a, b) = (&m[..cut], &m[cut + 1..]);
        if b.is_empty() {
            return Err(TokenizerError::InvalidSpec(format!(
                "merge {rank} {m:?} has an empty side"
            )));
        }
        merges.push((a.to_string(), b.to_string()));
    }

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| TokenizerError::InvalidSpec(format!("BPE: {e}")))?;

    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| backend(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());

    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(steps)));
    tk.with_decoder(Some(ByteLevelDecoder::default()));

    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, tok) in spec.tokens.iter().enumerate() {
        match token_type(i) {
            TOKEN_TYPE_CONTROL => {
                special.push(AddedToken::from(tok.clone(), true).normalized(false))
            }
            TOKEN_TYPE_USER_DEFINED => {
                user.push(AddedToken::from(tok.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tk.add_special_tokens(&special);
    tk.add_tokens(&user);

    if spec.add_bos {
        let bos_id = spec.bos_id.expect("checked above");
        let bos = spec.tokens[bos_id as usize].clone();
        let post = TemplateProcessing::builder()
            .try_single(vec![bos.clone(), "$A".to_string()])
            .and_then(|b| b.try_pair(vec![bos.clone(), "$A".to_string(), "$B:1".to_string()]))
            .map_err(|e| backend(format!("BOS template: {e}")))?
            .special_tokens(vec![(bos, bos_id)])
            .build()
            .map_err(|e| backend(format!("BOS template: {e}")))?;
        tk.with_post_processor(Some(post));
    }

    let tk: tokenizers::Tokenizer = tk;
    Ok(Tokenizer::from_parts(
        tk,
        spec.bos_id,
        spec.eos_id,
        &[],
        spec.chat_template.clone(),
    ))
}
