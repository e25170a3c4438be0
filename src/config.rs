//! Every option is declared once below: its key, type, default and documentation. A config file
//! (TOML) overrides the defaults, `CAREPOST_*` environment variables override the file, and the
//! command line overrides both. Unknown keys are an error that names the key.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A value an option can hold, read from TOML or from an environment variable.
trait OptionValue: Sized {
    fn from_toml(value: &toml::Value) -> Option<Self>;
    fn from_env(text: &str) -> Option<Self>;
    const KIND: &'static str;
}

impl OptionValue for String {
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
    fn from_env(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
    const KIND: &'static str = "a string";
}

impl OptionValue for u64 {
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_integer().and_then(|n| u64::try_from(n).ok())
    }
    fn from_env(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
    const KIND: &'static str = "a whole number";
}

impl OptionValue for bool {
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_bool()
    }
    fn from_env(text: &str) -> Option<Self> {
        match text.trim() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }
    const KIND: &'static str = "true or false";
}

/// What `config.example.toml` and `--help` say about one option.
pub struct OptionDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! options {
    ($( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $key:literal, $default:expr; )+) => {
        /// The effective configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( pub $field: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default.into(), )+ }
            }
        }

        pub const OPTIONS: &[OptionDoc] = &[
            $( OptionDoc { key: $key, default: stringify!($default), doc: concat!($($doc, "\n"),+) }, )+
        ];

        impl Config {
            fn set_from_toml(&mut self, key: &str, value: &toml::Value) -> Result<(), String> {
                match key {
                    $( $key => {
                        self.$field = <$ty>::from_toml(value).ok_or_else(|| {
                            format!("option `{}` must be {}", key, <$ty>::KIND)
                        })?;
                    } )+
                    _ => return Err(format!("unknown option `{key}`")),
                }
                Ok(())
            }

            fn set_from_env(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
                $(
                    let name = env_name($key);
                    if let Some(text) = lookup(&name) {
                        self.$field = <$ty>::from_env(&text).ok_or_else(|| {
                            format!("environment variable {name} must be {}", <$ty>::KIND)
                        })?;
                    }
                )+
                Ok(())
            }
        }
    };
}

options! {
    /// Address and port to serve HTTP on. Port 0 picks a free port.
    listen: String = "listen", "127.0.0.1:8080";
    /// Folder holding carepost.db and the attachment store. Created when missing.
    data: String = "data", "./carepost-data";
    /// The address patients and staff use to reach Carepost, used in emails and links.
    /// Use https:// when patients reach it over the internet (through the reverse proxy);
    /// cookies are then marked Secure. Empty: http:// and the address actually listened on.
    public_url: String = "public_url", "";
    /// Worker threads answering requests; each holds one database connection. Sign-ins wait
    /// for password hashing on their worker, so keep well above the sign-ins expected at once.
    workers: u64 = "workers", 16u64;
    /// SQLite's page cache of each worker's database connection, in MiB: up to workers times
    /// this much memory once every cache is full. The default holds the pages of a practice's
    /// busy inboxes, so they are not read again on every view (see README, Performance).
    page_cache_mib: u64 = "page_cache_mib", 8u64;
    /// Sign a user out after this many minutes without a request.
    session_idle_minutes: u64 = "session_idle_minutes", 20u64;
    /// Sign a user out this many hours after sign-in, however active.
    session_max_hours: u64 = "session_max_hours", 12u64;
    /// Largest request body accepted for an ordinary form, in bytes. The default holds a
    /// 20,000-character message in any script, percent-encoded.
    max_form_bytes: u64 = "max_form_bytes", 262144u64;
    /// Close a connection whose client sends or reads nothing for this many seconds.
    idle_connection_seconds: u64 = "idle_connection_seconds", 30u64;
    /// Log level: error, warn, info or debug.
    log_level: String = "log_level", "info";
    /// Email staff "You have unread patient messages" once a patient message has been unread this
    /// many business hours (08:00-18:00, Monday to Friday). 0: no reminders.
    reminder_business_hours: u64 = "reminder_business_hours", 0u64;
    /// The practice's offset from UTC in minutes (for example -300 for New York in winter),
    /// for business hours.
    utc_offset_minutes: String = "utc_offset_minutes", "0";
    /// SMTP server host name. Empty: no mail server; emails wait in the outbox.
    smtp_host: String = "smtp.host", "";
    /// SMTP port.
    smtp_port: u64 = "smtp.port", 587u64;
    /// SMTP connection security: "starttls", "tls" (implicit TLS) or "none" (local relay only).
    smtp_security: String = "smtp.security", "starttls";
    /// SMTP user name; empty for none.
    smtp_username: String = "smtp.username", "";
    /// SMTP password; prefer smtp.password_file.
    smtp_password: String = "smtp.password", "";
    /// File holding the SMTP password (first line).
    smtp_password_file: String = "smtp.password_file", "";
    /// Address emails are sent from.
    smtp_from_address: String = "smtp.from_address", "carepost@localhost";
    /// Name emails are sent from.
    smtp_from_name: String = "smtp.from_name", "Carepost";
    /// Seconds to wait for the SMTP server before giving up on one attempt.
    smtp_timeout_seconds: u64 = "smtp.timeout_seconds", 30u64;
}

/// `smtp.host` → `CAREPOST_SMTP_HOST`.
pub fn env_name(key: &str) -> String {
    format!("CAREPOST_{}", key.replace('.', "_").to_uppercase())
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(
        file: Option<&Path>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
            config
                .apply_toml(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        config.set_from_env(lookup)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| e.message().to_owned() + &line_hint(text, &e))?;
        for (key, value) in &table {
            match value {
                toml::Value::Table(section) => {
                    for (inner, value) in section {
                        self.set_from_toml(&format!("{key}.{inner}"), value)?;
                    }
                }
                _ => self.set_from_toml(key, value)?,
            }
        }
        Ok(())
    }

    /// Checks that hold across options; each message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.public_url.is_empty()
            || self.public_url.starts_with("http://")
            || self.public_url.starts_with("https://"))
        {
            return Err(format!(
                "public_url must start with http:// or https:// (it is \"{}\")",
                self.public_url
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err("workers must be between 1 and 256".into());
        }
        if self.page_cache_mib == 0 || self.page_cache_mib > 1024 {
            return Err("page_cache_mib must be between 1 and 1024".into());
        }
        if self.session_idle_minutes == 0 || self.session_max_hours == 0 {
            return Err("session_idle_minutes and session_max_hours must be at least 1".into());
        }
        if self.idle_connection_seconds == 0 {
            return Err("idle_connection_seconds must be at least 1".into());
        }
        if !["error", "warn", "info", "debug"].contains(&self.log_level.as_str()) {
            return Err("log_level must be one of error, warn, info, debug".into());
        }
        if self.utc_offset().is_none() {
            return Err(
                "utc_offset_minutes must be a whole number of minutes between -840 and 840".into(),
            );
        }
        if !["starttls", "tls", "none"].contains(&self.smtp_security.as_str()) {
            return Err("smtp.security must be one of starttls, tls, none".into());
        }
        if !self.smtp_password.is_empty() && !self.smtp_password_file.is_empty() {
            return Err("set smtp.password or smtp.password_file, not both".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "listen must be an address and port such as 127.0.0.1:8080 (it is \"{}\")",
                self.listen
            ));
        }
        Ok(())
    }

    /// `utc_offset_minutes` in seconds.
    pub fn utc_offset(&self) -> Option<i64> {
        self.utc_offset_minutes
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|m| (-840..=840).contains(m))
            .map(|m| m * 60)
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.data)
    }

    /// Cookies get the Secure flag when users reach Carepost over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

fn line_hint(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// The commented example configuration, generated from the declarations above; the shipped
/// `config.example.toml` is tested to equal it.
pub fn example_toml() -> String {
    let mut out = String::from(
        "# Carepost configuration. Every option is shown with its default.\n\
         # Each can also be set by an environment variable, named after the option:\n\
         # `listen` is CAREPOST_LISTEN, `smtp.host` is CAREPOST_SMTP_HOST.\n\
         # Precedence: command line, then environment, then this file, then the default.\n",
    );
    let mut section = "";
    for option in OPTIONS {
        let (this_section, name) = match option.key.split_once('.') {
            Some((s, n)) => (s, n),
            None => ("", option.key),
        };
        if this_section != section {
            let _ = write!(out, "\n[{this_section}]\n");
            section = this_section;
        }
        out.push('\n');
        for line in option.doc.lines() {
            let _ = writeln!(out, "#{}", line);
        }
        let default = option.default.trim_end_matches("u64");
        let _ = writeln!(out, "# {name} = {default}");
    }
    out
}
