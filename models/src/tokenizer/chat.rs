//! Chat templates: HF Jinja chat templates rendered with minijinja, sandboxed.
//!
//! The environment matches what transformers gives a template: `trim_blocks` and
//! `lstrip_blocks` on, loop controls (`break`/`continue`), `raise_exception(msg)`,
//! `strftime_now(fmt)`, Python string/dict methods (`.strip()`, `.startswith()`, `.items()`,
//! via minijinja-contrib's pycompat), and a `tojson` that writes like Python's
//! `json.dumps(x, ensure_ascii=False)` (separators `", "`/`": "`, optional `indent`), not
//! minijinja's HTML-safe one. The context is `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`.
//!
//! Sandbox: no loader (a template cannot include or import anything, nor read files), a fuel
//! limit (instructions executed), a recursion limit, and an output-size limit; each is an error,
//! never a hang or unbounded memory.

use std::io::Write;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::{Result, TokenizerError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool", ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Resource limits for rendering a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Most template instructions executed.
    pub fuel: u64,
    /// Deepest nesting of blocks, loops, macro calls.
    pub recursion: usize,
    /// Most bytes of output.
    pub max_output_bytes: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            fuel: 20_000_000,
            recursion: 100,
            max_output_bytes: 16 << 20,
        }
    }
}

const RAISED: &str = "raise_exception: ";

/// Renders a chat with the default [`ChatLimits`].
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String> {
    render_chat_with(
        template,
        messages,
        add_generation_prompt,
        bos,
        eos,
        ChatLimits::default(),
    )
}

/// Renders a chat with explicit limits.
pub fn render_chat_with(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
    limits: ChatLimits,
) -> Result<String> {
    let env = environment(limits)?;
    let tmpl = env.template_from_str(template).map_err(template_error)?;
    let ctx = minijinja::context! {
        messages => Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    };
    let mut out = LimitedWriter {
        buf: Vec::new(),
        limit: limits.max_output_bytes,
        exceeded: false,
    };
    let rendered = tmpl.render_captured_to(ctx, &mut out);
    if out.exceeded {
        return Err(TokenizerError::TemplateOutputTooLarge {
            limit: limits.max_output_bytes,
        });
    }
    rendered.map_err(template_error)?;
    String::from_utf8(out.buf)
        .map_err(|e| TokenizerError::Template(format!("output is not UTF-8: {e}")))
}

fn environment(limits: ChatLimits) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(template_error)?;
    env.set_syntax(syntax);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{msg}"),
            ))
        },
    );
    env.add_function(
        "strftime_now",
        |fmt: String| -> std::result::Result<Value, Error> {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Ok(Value::from(strftime_utc(&fmt, secs)))
        },
    );
    env.add_filter("tojson", tojson);
    Ok(env)
}

fn template_error(e: Error) -> TokenizerError {
    if let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED)) {
        return TokenizerError::TemplateRaised(msg.to_string());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    TokenizerError::Template(text)
}

/// Collects output, failing the render once `limit` bytes would be exceeded.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tojson` as transformers defines it: `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let value = if sort_keys == Some(true) {
        sorted(value)
    } else {
        value
    };
    let mut out = Vec::new();
    let res = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            );
            value.serialize(&mut ser)
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    res.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

/// A copy of `value` with every map's keys in sorted order (for `sort_keys=true`).
fn sorted(value: Value) -> Value {
    if value.kind() == minijinja::value::ValueKind::Seq {
        let items: Vec<Value> = value.try_iter().into_iter().flatten().map(sorted).collect();
        return Value::from(items);
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        let mut entries: Vec<(Value, Value)> = value
            .try_iter()
            .into_iter()
            .flatten()
            .map(|k| {
                let v = value.get_item(&k).unwrap_or_default();
                (k, sorted(v))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        return Value::from_pairs(entries);
    }
    value
}

/// serde_json formatter with Python's default separators `", "` and `": "`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// Formats a UTC time for `strftime_now`: `%Y %m %d %e %H %M %S %y %b %B %a %A %j %%`; other
/// directives are left as written.
pub fn strftime_utc(fmt: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let (m, d) = (
        MONTHS[(month - 1) as usize],
        DAYS[days.rem_euclid(7) as usize],
    );

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('b') => out.push_str(&m[..3]),
            Some('B') => out.push_str(m),
            Some('a') => out.push_str(&d[..3]),
            Some('A') => out.push_str(d),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
