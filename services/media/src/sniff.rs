//! What kind of master a file is, decided from its first bytes (never from a name or a
//! header the uploader chose).

use crate::jobs::MediaKind;

/// A recognised master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub kind: MediaKind,
    pub content_type: &'static str,
}

/// The kind and type of the file that begins with `head`, when it is one media takes.
pub fn sniff(head: &[u8]) -> Option<Sniffed> {
    let found = infer::get(head)?;
    let (kind, content_type) = match found.mime_type() {
        "image/jpeg" => (MediaKind::Image, "image/jpeg"),
        "image/png" => (MediaKind::Image, "image/png"),
        "image/webp" => (MediaKind::Image, "image/webp"),
        "image/gif" => (MediaKind::Image, "image/gif"),
        "audio/x-wav" => (MediaKind::Audio, "audio/wav"),
        "audio/x-flac" => (MediaKind::Audio, "audio/flac"),
        "audio/mpeg" => (MediaKind::Audio, "audio/mpeg"),
        "audio/ogg" => (MediaKind::Audio, "audio/ogg"),
        "audio/m4a" => (MediaKind::Audio, "audio/mp4"),
        "video/mp4" => (MediaKind::Video, "video/mp4"),
        "video/webm" => (MediaKind::Video, "video/webm"),
        "video/x-matroska" => (MediaKind::Video, "video/x-matroska"),
        "video/quicktime" => (MediaKind::Video, "video/quicktime"),
        _ => return None,
    };
    Some(Sniffed { kind, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png).map(|found| found.kind), Some(MediaKind::Image));
        let wav = b"RIFF\x24\0\0\0WAVEfmt ";
        assert_eq!(sniff(wav).map(|found| found.kind), Some(MediaKind::Audio));
        assert_eq!(sniff(b"%PDF-1.7 not media"), None);
        assert_eq!(sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), None);
        assert_eq!(sniff(b""), None);
    }
}
