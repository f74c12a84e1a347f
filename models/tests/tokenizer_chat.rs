//! Chat template rendering: ChatML, HF template idioms (loop controls, Python methods,
//! `tojson`, `raise_exception`), whitespace control as transformers sets it, and the sandbox
//! limits (fuel, recursion, output size) and error reporting.

use models::tokenizer::chat::{ChatLimits, render_chat_with, strftime_utc};
use models::tokenizer::{ChatMessage, TokenizerError, render_chat};

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn msgs() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi 😀\nthere"),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Bye"),
    ]
}

#[test]
fn chatml_renders() {
    let out = render_chat(CHATML, &msgs(), true, "", "").unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 😀\nthere<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    let out = render_chat(CHATML, &msgs()[..1], false, "", "").unwrap();
    assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n");
    assert_eq!(render_chat(CHATML, &[], false, "", "").unwrap(), "");
}

#[test]
fn hf_template_idioms() {
    // Block tags on their own lines vanish (trim_blocks + lstrip_blocks), as in transformers.
    // Expected outputs here were checked against jinja2's sandbox with transformers' settings.
    let t = "{{ bos_token }}\n{% for m in messages %}\n    {% if m.role == 'system' %}\n{% continue %}\n    {% endif %}\n[{{ m.role | upper }}] {{ m.content.strip() }}{% if m.content.startswith('Bye') %}!{% endif %}\n\n{% if loop.index > 10 %}{% break %}{% endif %}\n{% endfor %}\n{{ eos_token }}";
    let out = render_chat(t, &msgs(), false, "<s>", "</s>").unwrap();
    assert_eq!(
        out,
        "<s>\n[USER] Hi 😀\nthere\n[ASSISTANT] Hello.\n[USER] Bye!\n</s>"
    );
    // namespace(), selectattr, length, join, items(), split.
    let t = "{% set ns = namespace(n=0) %}{% for m in messages | selectattr('role', 'equalto', 'user') %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}/{{ messages | length }} {{ messages | map(attribute='role') | join(',') }} {% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %} {{ 'a b'.split() | join('+') }}";
    let out = render_chat(t, &msgs(), false, "", "").unwrap();
    assert_eq!(out, "2/4 system,user,assistant,user a=1 a+b");
}

#[test]
fn tojson_writes_like_python_json_dumps() {
    let t = "{{ messages[1] | tojson }}|{{ [1, 2.5, none, true, 'é<&>'] | tojson }}|{{ {'b': 1, 'a': [1]} | tojson(indent=2) }}|{{ [{'b': 1, 'a': 2}] | tojson(sort_keys=true) }}";
    let out = render_chat(t, &msgs(), false, "", "").unwrap();
    assert_eq!(
        out,
        "{\"role\": \"user\", \"content\": \"Hi 😀\\nthere\"}|[1, 2.5, null, true, \"é<&>\"]|{\n  \"b\": 1,\n  \"a\": [\n    1\n  ]\n}|[{\"a\": 2, \"b\": 1}]"
    );
}

#[test]
fn raise_exception_is_its_own_error() {
    let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok";
    let e = render_chat(t, &msgs(), false, "", "").unwrap_err();
    match e {
        TokenizerError::TemplateRaised(m) => {
            assert!(m.starts_with("Conversation roles must alternate"), "{m}")
        }
        other => panic!("expected TemplateRaised, got {other}"),
    }
    assert_eq!(render_chat(t, &msgs()[1..], false, "", "").unwrap(), "ok");
}

#[test]
fn sandbox_limits_stop_runaway_templates() {
    // Fuel: a huge loop is stopped, not run.
    let e = render_chat(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        &[],
        false,
        "",
        "",
    )
    .unwrap_err();
    assert!(matches!(e, TokenizerError::Template(_)), "{e}");
    assert!(e.to_string().to_lowercase().contains("fuel"), "{e}");
    // Output size.
    let limits = ChatLimits {
        max_output_bytes: 1000,
        ..ChatLimits::default()
    };
    let e = render_chat_with(
        "{% for i in range(10000) %}xxxxxxxxxx{% endfor %}",
        &[],
        false,
        "",
        "",
        limits,
    )
    .unwrap_err();
    assert!(
        matches!(e, TokenizerError::TemplateOutputTooLarge { limit: 1000 }),
        "{e}"
    );
    // Recursion.
    let t = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let e = render_chat(t, &[], false, "", "").unwrap_err();
    assert!(matches!(e, TokenizerError::Template(_)), "{e}");
    // No loader: include/import find nothing (no filesystem access).
    for t in ["{% include '/etc/passwd' %}", "{% import 'x.j2' as x %}"] {
        let e = render_chat(t, &[], false, "", "").unwrap_err();
        assert!(matches!(e, TokenizerError::Template(_)), "{e}");
    }
}

#[test]
fn template_errors_are_reported() {
    let e = render_chat("{% for m in messages %}", &msgs(), false, "", "").unwrap_err();
    assert!(matches!(e, TokenizerError::Template(_)), "{e}");
    let e = render_chat(
        "{{ messages[0].content.nosuchmethod() }}",
        &msgs(),
        false,
        "",
        "",
    )
    .unwrap_err();
    assert!(matches!(e, TokenizerError::Template(_)), "{e}");
    // Undefined variables are lenient, as in jinja2's default.
    assert_eq!(
        render_chat(
            "[{{ tools }}]{% if tools %}x{% endif %}",
            &msgs(),
            false,
            "",
            ""
        )
        .unwrap(),
        "[]"
    );
}

#[test]
fn strftime_now_formats() {
    // 2024-07-23 13:05:09 UTC.
    assert_eq!(
        strftime_utc("%d %b %Y %H:%M:%S %A %j %B %%", 1_721_739_909),
        "23 Jul 2024 13:05:09 Tuesday 205 July %"
    );
    assert_eq!(strftime_utc("%Y-%m-%d", 951_782_400), "2000-02-29");
    let out = render_chat("{{ strftime_now('%Y') }}", &[], false, "", "").unwrap();
    assert!(out.len() == 4 && out.starts_with('2'), "{out}");
}
