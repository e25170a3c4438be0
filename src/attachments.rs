//! The attachment store: each file kept once under its SHA-256 in the data folder, written to a
//! temporary file, fsynced, renamed into place and the folder fsynced, so a reference in the
//! database only ever points at a complete, verified file. Also the type rules: one of the 14
//! formats the article allows, by extension and by content.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// At most 25 MB (26,214,400 bytes): exactly that is accepted, one more is refused.
pub const MAX_BYTES: u64 = 26_214_400;

/// The allowed formats, as the article lists them, with the type each is served as.
pub const ALLOWED: &[(&str, &str)] = &[
    ("xml", "application/xml"),
    ("txt", "text/plain; charset=utf-8"),
    ("gif", "image/gif"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("pdf", "application/pdf"),
    ("m4a", "audio/mp4"),
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("wma", "audio/x-ms-wma"),
    ("aiff", "audio/aiff"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
];

pub const ALLOWED_TEXT: &str = "a document (PDF, TXT or XML), a picture (JPG, PNG or GIF), a sound recording (MP3, M4A, WAV, WMA or AIFF) or a video (MP4 or MOV)";

/// Why a file was refused, in words for the person who sent it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    TooLarge,
    Empty,
    NoName,
    WrongType,
    ContentMismatch,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::TooLarge => "The file is larger than 25 MB. Attach a smaller file.".into(),
            Refusal::Empty => "The file is empty. Choose another file.".into(),
            Refusal::NoName => format!("The file has no name. Choose a file whose name ends in its type: {ALLOWED_TEXT}."),
            Refusal::WrongType => format!("This type of file cannot be sent. Attach {ALLOWED_TEXT}, 25 MB or less."),
            Refusal::ContentMismatch => format!("The file's content does not match the type in its name, so it cannot be sent. Attach {ALLOWED_TEXT}."),
        }
    }
}

/// The extension of a (cleaned) file name, lower-cased, if it is one of the allowed ones.
pub fn allowed_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    ALLOWED.iter().find(|(e, _)| *e == ext).map(|(e, _)| *e)
}

pub fn media_type(extension: &str) -> &'static str {
    ALLOWED
        .iter()
        .find(|(e, _)| *e == extension)
        .map_or("application/octet-stream", |(_, t)| *t)
}

/// A sender's file name made safe to show: the last path component, no control characters,
/// at most 200 characters. It is never used to name anything on disk.
pub fn clean_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | '|' | '*' | '?' | ':'))
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    trimmed.chars().take(200).collect()
}

/// Whether the first bytes of a file fit its extension. Text formats are checked as a whole by
/// `Utf8Check` while streaming.
pub fn magic_matches(extension: &str, head: &[u8]) -> bool {
    let at = |offset: usize, bytes: &[u8]| head.get(offset..offset + bytes.len()) == Some(bytes);
    match extension {
        "gif" => at(0, b"GIF87a") || at(0, b"GIF89a"),
        "jpg" | "jpeg" => at(0, &[0xFF, 0xD8, 0xFF]),
        "png" => at(0, &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]),
        "pdf" => at(0, b"%PDF-"),
        "m4a" | "mp4" => at(4, b"ftyp"),
        "mov" => {
            at(4, b"ftyp") || at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free")
        }
        "wav" => at(0, b"RIFF") && at(8, b"WAVE"),
        "aiff" => at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")),
        "wma" => at(
            0,
            &[
                0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62,
                0xCE, 0x6C,
            ],
        ),
        "mp3" => at(0, b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0),
        "txt" => true,
        "xml" => {
            let text = head.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(head);
            text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
        }
        _ => false,
    }
}

/// Checks that a stream is well-formed UTF-8 without NUL bytes, chunk by chunk.
#[derive(Default)]
pub struct Utf8Check {
    pending: Vec<u8>,
    bad: bool,
}

impl Utf8Check {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.bad {
            return;
        }
        self.pending.extend_from_slice(chunk);
        match std::str::from_utf8(&self.pending) {
            Ok(text) => {
                self.bad = text.contains('\0');
                self.pending.clear();
            }
            Err(e) if e.error_len().is_none() => {
                // An incomplete character at the end: keep it for the next chunk.
                let valid = e.valid_up_to();
                self.bad = self.pending[..valid].contains(&0);
                self.pending.drain(..valid);
            }
            Err(_) => self.bad = true,
        }
    }

    pub fn is_valid(&self) -> bool {
        !self.bad && self.pending.is_empty()
    }
}

/// The store's folders inside the data folder.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A received file in a temporary place, hashed and checked, not yet in the store.
pub struct Received {
    pub temp: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub file_name: String,
    pub media_type: &'static str,
}

impl Drop for Received {
    /// A received file that was not stored is removed: a refused upload leaves nothing behind.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temp);
    }
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            root: data_dir.join("blobs"),
        }
    }

    fn temp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root
            .join("sha256")
            .join(&sha256[..2])
            .join(&sha256[2..])
    }

    /// Creates the folders and removes temporary files left by a crash.
    pub fn open(&self) -> io::Result<usize> {
        fs::create_dir_all(self.root.join("sha256"))?;
        fs::create_dir_all(self.temp_dir())?;
        let mut removed = 0;
        for entry in fs::read_dir(self.temp_dir())? {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Streams `data` into a temporary file while hashing and checking it. Reads at most one byte
    /// more than the limit. The file is refused (and removed) when it breaks a rule.
    pub fn receive(
        &self,
        raw_name: &str,
        data: &mut dyn Read,
    ) -> Result<Result<Received, Refusal>, ReceiveError> {
        let file_name = clean_name(raw_name);
        if file_name.is_empty() {
            return Ok(Err(Refusal::NoName));
        }
        let Some(extension) = allowed_extension(&file_name) else {
            return Ok(Err(Refusal::WrongType));
        };
        let temp = self
            .temp_dir()
            .join(format!("upload-{}", crate::crypto::random_token()));
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(ReceiveError::Store)?;
        let mut received = Received {
            temp,
            sha256: String::new(),
            size: 0,
            file_name,
            media_type: media_type(extension),
        };
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(64);
        let mut text = Utf8Check::default();
        let is_text = matches!(extension, "txt" | "xml");
        let mut limited = data.take(MAX_BYTES + 1);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReceiveError::Upload),
            };
            let chunk = &buf[..n];
            received.size += n as u64;
            if received.size > MAX_BYTES {
                return Ok(Err(Refusal::TooLarge));
            }
            if head.len() < 64 {
                head.extend_from_slice(&chunk[..chunk.len().min(64 - head.len())]);
            }
            if is_text {
                text.feed(chunk);
            }
            hasher.update(chunk);
            file.write_all(chunk).map_err(ReceiveError::Store)?;
        }
        if received.size == 0 {
            return Ok(Err(Refusal::Empty));
        }
        if !magic_matches(extension, &head) || (is_text && !text.is_valid()) {
            return Ok(Err(Refusal::ContentMismatch));
        }
        file.sync_all().map_err(ReceiveError::Store)?;
        received.sha256 = crate::crypto::hex(&hasher.finalize());
        Ok(Ok(received))
    }

    /// Moves a received file into the store under its hash (once: identical content is kept
    /// once) and makes the rename durable. After this the database may reference it.
    pub fn keep(&self, received: &Received) -> io::Result<()> {
        let target = self.path_of(&received.sha256);
        let folder = target
            .parent()
            .ok_or_else(|| io::Error::other("no parent folder"))?;
        fs::create_dir_all(folder)?;
        if target.exists()
            && Store::hash_file(&target)
                .is_ok_and(|(h, n)| h == received.sha256 && n == received.size)
        {
            // The same bytes are stored already, intact; the temporary copy goes when
            // `received` drops. (A damaged copy is replaced by the good one below.)
            return Ok(());
        }
        fs::rename(&received.temp, &target)?;
        File::open(folder)?.sync_all()?;
        File::open(self.temp_dir())?.sync_all()?;
        Ok(())
    }

    /// Removes stored files no message references: after a crash between storing a file and
    /// committing its message. Only at start, before any upload can be under way.
    pub fn remove_unreferenced(
        &self,
        referenced: &std::collections::HashSet<String>,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for (name, path) in self.stored()? {
            if !referenced.contains(&name) {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Opens a stored file after checking that its content still has its hash.
    pub fn open_verified(&self, sha256: &str, size: u64) -> io::Result<Result<File, Damage>> {
        let path = self.path_of(sha256);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(Damage::Missing)),
            Err(e) => return Err(e),
        };
        let (actual, copied) = hash_reader(&mut file)?;
        if copied != size || actual != sha256 {
            return Ok(Err(Damage::Corrupt));
        }
        Ok(Ok(File::open(&path)?))
    }

    /// Every stored file's hash (from its path) and the path.
    pub fn stored(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        let top = self.root.join("sha256");
        if !top.exists() {
            return Ok(found);
        }
        for prefix in fs::read_dir(&top)? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                found.push((String::new(), prefix.path()));
                continue;
            }
            let p = prefix.file_name().to_string_lossy().into_owned();
            for entry in fs::read_dir(prefix.path())? {
                let entry = entry?;
                found.push((
                    format!("{p}{}", entry.file_name().to_string_lossy()),
                    entry.path(),
                ));
            }
        }
        Ok(found)
    }

    /// Hashes a stored file as it is now.
    pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
        hash_reader(&mut File::open(path)?)
    }
}

/// SHA-256 (hex) and length of everything `reader` yields.
fn hash_reader(reader: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((crate::crypto::hex(&hasher.finalize()), size))
}

/// Why receiving a file failed: the sender's upload broke off, or the server could not write
/// (a full or failing disk) — the second is the server's fault and is logged.
#[derive(Debug)]
pub enum ReceiveError {
    Upload,
    Store(io::Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    Missing,
    Corrupt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../x.pdf"), "x.pdf");
        assert_eq!(clean_name("C:\\Users\\a\\scan.PDF"), "scan.PDF");
        assert_eq!(clean_name("a\u{0}b<c>.txt"), "abc.txt");
        assert_eq!(clean_name(".hidden.txt"), "hidden.txt");
        assert_eq!(clean_name(""), "");
        assert_eq!(allowed_extension("scan.PDF"), Some("pdf"));
        assert_eq!(allowed_extension("a.svg"), None);
        assert_eq!(allowed_extension("noext"), None);
    }

    #[test]
    fn magic() {
        assert!(magic_matches("pdf", b"%PDF-1.7\n"));
        assert!(!magic_matches("pdf", b"MZ\x90\x00"));
        assert!(magic_matches("png", b"\x89PNG\r\n\x1a\n...."));
        assert!(magic_matches("mp4", b"\0\0\0\x18ftypmp42"));
        assert!(magic_matches(
            "xml",
            b"\xEF\xBB\xBF  <?xml version=\"1.0\"?>"
        ));
        assert!(!magic_matches("xml", b"hello"));
        assert!(magic_matches("mp3", b"\xFF\xFB\x90\x00"));
    }

    #[test]
    fn utf8_across_chunks() {
        let text = "héllo wörld ✓".as_bytes();
        let mut check = Utf8Check::default();
        for chunk in text.chunks(1) {
            check.feed(chunk);
        }
        assert!(check.is_valid());
        let mut bad = Utf8Check::default();
        bad.feed(b"ok\xFF");
        assert!(!bad.is_valid());
        let mut cut = Utf8Check::default();
        cut.feed(&"✓".as_bytes()[..2]);
        assert!(!cut.is_valid());
        let mut nul = Utf8Check::default();
        nul.feed(b"a\0b");
        assert!(!nul.is_valid());
    }
}

/// What `carepost verify` found.
#[derive(Default, Debug)]
pub struct Report {
    pub checked: usize,
    pub missing: Vec<String>,
    pub corrupt: Vec<String>,
    pub unreferenced: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty() && self.unreferenced.is_empty()
    }
}

/// Re-hashes every stored file and checks every reference (attachment id, hash, size).
pub fn verify(store: &Store, references: &[(i64, String, u64)]) -> io::Result<Report> {
    let mut report = Report::default();
    let mut referenced = std::collections::HashSet::new();
    for (id, sha256, _) in references {
        referenced.insert(sha256.clone());
        let path = store.path_of(sha256);
        if !path.exists() {
            report
                .missing
                .push(format!("attachment {id}: {} is missing", path.display()));
        }
    }
    for (name, path) in store.stored()? {
        report.checked += 1;
        let (actual, size) = Store::hash_file(&path)?;
        if actual != name {
            report.corrupt.push(format!(
                "{} does not have the content its name says (now {actual}, {size} bytes)",
                path.display()
            ));
        } else if let Some((id, _, want)) =
            references.iter().find(|(_, h, s)| *h == name && *s != size)
        {
            report.corrupt.push(format!(
                "attachment {id}: {} has {size} bytes, the record says {want}",
                path.display()
            ));
        }
        if !referenced.contains(&name) {
            report.unreferenced.push(format!(
                "{} is not referenced by any message",
                path.display()
            ));
        }
    }
    Ok(report)
}
