//! A record whose field holds timed segments (a transcript: `[{start, end, text,
//! speaker?}]`, times in seconds) written out as plain text, SubRip (srt), WebVTT, JSON or
//! Markdown.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::store::Store;
use crate::error::{Error, Result};

/// The formats a transcript can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptFormat {
    /// One paragraph per segment (a speaker change starts a labelled one).
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// The segments as a JSON array, checked and normalized.
    Json,
    /// Markdown with a timestamp per segment.
    Md,
}

impl TranscriptFormat {
    pub fn parse(name: &str) -> Result<TranscriptFormat> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "txt" | "text" => TranscriptFormat::Txt,
            "srt" => TranscriptFormat::Srt,
            "vtt" | "webvtt" => TranscriptFormat::Vtt,
            "json" => TranscriptFormat::Json,
            "md" | "markdown" => TranscriptFormat::Md,
            other => {
                return Err(Error::InvalidInput {
                    source_name: "transcript format".into(),
                    reason: format!("{other:?} is not one of txt, srt, vtt, json, md"),
                })
            }
        })
    }

    /// The file extension (and `--format` name).
    pub fn extension(self) -> &'static str {
        match self {
            TranscriptFormat::Txt => "txt",
            TranscriptFormat::Srt => "srt",
            TranscriptFormat::Vtt => "vtt",
            TranscriptFormat::Json => "json",
            TranscriptFormat::Md => "md",
        }
    }

    /// The media type to send it as.
    pub fn mime(self) -> &'static str {
        match self {
            TranscriptFormat::Txt => "text/plain; charset=utf-8",
            TranscriptFormat::Srt => "application/x-subrip; charset=utf-8",
            TranscriptFormat::Vtt => "text/vtt; charset=utf-8",
            TranscriptFormat::Json => "application/json",
            TranscriptFormat::Md => "text/markdown; charset=utf-8",
        }
    }
}

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Seconds from the start.
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// Reads the segments of `value` (a record's field), refusing what is not a list of
/// segments with finite, ordered times.
pub fn segments(value: &Value, source: &str) -> Result<Vec<Segment>> {
    let bad = |reason: String| Error::InvalidInput { source_name: source.to_string(), reason };
    let items = value.as_array().ok_or_else(|| bad("the field is not a list of segments".into()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let segment: Segment = serde_json::from_value(item.clone())
            .map_err(|e| bad(format!("segment {i}: {e} (expected start, end, text and maybe speaker)")))?;
        if !(segment.start.is_finite()
            && segment.end.is_finite()
            && 0.0 <= segment.start
            && segment.start <= segment.end)
        {
            return Err(bad(format!(
                "segment {i}: start {} and end {} are not times in order",
                segment.start, segment.end
            )));
        }
        out.push(segment);
    }
    Ok(out)
}

/// `h:mm:ss,mmm`-style time: `separator` is `,` for SubRip and `.` for WebVTT.
fn clock(seconds: f64, separator: char) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// Subtitle text cannot hold an empty line (it ends a cue) nor, in WebVTT, `-->`.
fn cue_text(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("\n").replace("-->", "->")
}

/// Writes `segments` in `format`.
pub fn render(segments: &[Segment], format: TranscriptFormat) -> String {
    let mut out = String::new();
    match format {
        TranscriptFormat::Txt => {
            let mut speaker: Option<&str> = None;
            for segment in segments {
                let text = segment.text.trim();
                match segment.speaker.as_deref() {
                    Some(s) if speaker != Some(s) => {
                        let _ = writeln!(out, "{s}: {text}");
                        speaker = Some(s);
                    }
                    _ => {
                        let _ = writeln!(out, "{text}");
                    }
                }
            }
        }
        TranscriptFormat::Srt => {
            for (i, segment) in segments.iter().enumerate() {
                let text = with_speaker(segment, &cue_text(&segment.text));
                let _ =
                    write!(out, "{}\n{} --> {}\n{text}\n\n", i + 1, clock(segment.start, ','), clock(segment.end, ','));
            }
        }
        TranscriptFormat::Vtt => {
            out.push_str("WEBVTT\n\n");
            for segment in segments {
                let text = cue_text(&segment.text);
                let text = match &segment.speaker {
                    Some(s) => format!("<v {}>{text}", s.replace(['<', '>'], "")),
                    None => text,
                };
                let _ = write!(out, "{} --> {}\n{text}\n\n", clock(segment.start, '.'), clock(segment.end, '.'));
            }
        }
        TranscriptFormat::Json => {
            out = serde_json::to_string_pretty(segments).unwrap_or_default();
            out.push('\n');
        }
        TranscriptFormat::Md => {
            for segment in segments {
                let when = clock(segment.start, '.');
                let when = when.rsplit_once('.').map_or(when.as_str(), |(hms, _)| hms).to_string();
                let text = segment.text.split_whitespace().collect::<Vec<_>>().join(" ");
                let _ = match &segment.speaker {
                    Some(s) => writeln!(out, "- **[{when}] {s}:** {text}"),
                    None => writeln!(out, "- **[{when}]** {text}"),
                };
            }
        }
    }
    out
}

impl Store {
    /// Record `id` of `collection` with its segments field `field` written in `format`.
    pub fn transcript(&self, collection: &str, id: &str, field: &str, format: TranscriptFormat) -> Result<String> {
        let record = self.get(collection, id)?;
        let value = record.body.get(field).ok_or_else(|| Error::InvalidInput {
            source_name: format!("{collection}/{id}"),
            reason: format!("the record has no field {field:?} of segments"),
        })?;
        Ok(render(&segments(value, &format!("{collection}/{id}.{field}"))?, format))
    }
}

fn with_speaker(segment: &Segment, text: &str) -> String {
    match &segment.speaker {
        Some(s) => format!("{s}: {text}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<Segment> {
        segments(
            &json!([
                {"start": 0.0, "end": 2.5, "text": "Hello there.", "speaker": "Ana"},
                {"start": 2.5, "end": 3661.042, "text": "A long\n\nanswer --> with an arrow.", "speaker": "Ben"},
                {"start": 3661.042, "end": 3662.0, "text": " And more. ", "speaker": "Ben"}
            ]),
            "test",
        )
        .expect("segments")
    }

    #[test]
    fn each_format_is_written_as_its_readers_expect() {
        let s = sample();
        assert_eq!(
            render(&s, TranscriptFormat::Srt),
            "1\n00:00:00,000 --> 00:00:02,500\nAna: Hello there.\n\n\
             2\n00:00:02,500 --> 01:01:01,042\nBen: A long\nanswer -> with an arrow.\n\n\
             3\n01:01:01,042 --> 01:01:02,000\nBen: And more.\n\n"
        );
        assert_eq!(
            render(&s, TranscriptFormat::Vtt),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n<v Ana>Hello there.\n\n\
             00:00:02.500 --> 01:01:01.042\n<v Ben>A long\nanswer -> with an arrow.\n\n\
             01:01:01.042 --> 01:01:02.000\n<v Ben>And more.\n\n"
        );
        assert_eq!(
            render(&s, TranscriptFormat::Txt),
            "Ana: Hello there.\nBen: A long\n\nanswer --> with an arrow.\nAnd more.\n"
        );
        assert_eq!(
            render(&s, TranscriptFormat::Md),
            "- **[00:00:00] Ana:** Hello there.\n- **[00:00:02] Ben:** A long answer --> with an arrow.\n\
             - **[01:01:01] Ben:** And more.\n"
        );
        let back: Vec<Segment> = serde_json::from_str(&render(&s, TranscriptFormat::Json)).expect("json");
        assert_eq!(back, s);
    }

    #[test]
    fn what_is_not_a_transcript_is_refused_with_the_segment_named() {
        for (value, says) in [
            (json!("text"), "not a list"),
            (json!([{"start": 0, "text": "no end"}]), "segment 0"),
            (json!([{"start": 0, "end": 1, "text": "ok"}, {"start": 5, "end": 2, "text": "backwards"}]), "segment 1"),
            (json!([{"start": -1, "end": 2, "text": "negative"}]), "segment 0"),
        ] {
            let e = segments(&value, "t").expect_err("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(TranscriptFormat::parse("SRT").expect("srt"), TranscriptFormat::Srt);
        assert!(TranscriptFormat::parse("docx").is_err());
    }
}
