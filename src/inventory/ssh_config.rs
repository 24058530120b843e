//! The part of the OpenSSH client configuration (`ssh_config(5)`) that decides where and how to
//! connect: `Host` blocks with `*`, `?` and `!` patterns, `Include`, and the keywords listed in
//! [`HostConfig`]. As in OpenSSH, the first value obtained for a keyword wins, except
//! `IdentityFile`, whose values accumulate. Other keywords are ignored; `Match` blocks other than
//! `Match all` are skipped (and reported in [`SshConfig::notes`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an SSH config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    /// The file (or an included file) could not be read.
    #[error("cannot read SSH config `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed SSH client config.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
    /// Things that were skipped and might surprise the user (unsupported `Match` blocks).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
enum Criteria {
    /// Applies to every host (directives before the first `Host`, and `Match all`).
    All,
    /// `Host` patterns: `(negated, pattern)`.
    Host(Vec<(bool, String)>),
    /// A `Match` we do not evaluate: never applies.
    Never,
}

#[derive(Debug, Clone)]
struct Block {
    criteria: Criteria,
    directives: Vec<Directive>,
}

#[derive(Debug, Clone)]
struct Directive {
    keyword: String,
    args: Vec<String>,
    /// The rest of the line after the keyword, as written (for `ProxyCommand`).
    raw: String,
    file: PathBuf,
    line: usize,
}

/// What the SSH config says about one host. Paths are as written (tokens and `~` unexpanded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    /// `HostName`, with `%h` already replaced by the host as given.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// Every `IdentityFile`, in order.
    pub identity_files: Vec<String>,
    /// `IdentitiesOnly`.
    pub identities_only: Option<bool>,
    /// `ProxyJump`, unless a `ProxyCommand` came first.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand` (the rest of its line, as written), unless a `ProxyJump` came first.
    pub proxy_command: Option<String>,
    /// Every `CertificateFile`, in order.
    pub certificate_files: Vec<String>,
    /// `UserKnownHostsFile` (all files of the first occurrence).
    pub user_known_hosts: Option<Vec<String>>,
    /// `GlobalKnownHostsFile`.
    pub global_known_hosts: Option<Vec<String>>,
    /// `HostKeyAlias`: the name to look up in known_hosts instead of the host name.
    pub host_key_alias: Option<String>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (zero = off).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<u32>,
}

const MAX_INCLUDE_DEPTH: usize = 16;

impl SshConfig {
    /// Reads `path` and the files it includes. `home` anchors `~` and relative `Include`s
    /// (which OpenSSH resolves in `~/.ssh` for the user's config).
    pub fn load(path: &Path, home: Option<&Path>) -> Result<SshConfig, SshConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, home)
    }

    /// Parses config text; `path` names it in messages. `Include`d files are read from disk.
    pub fn parse(
        text: &str,
        path: &Path,
        home: Option<&Path>,
    ) -> Result<SshConfig, SshConfigError> {
        let mut cfg = SshConfig::default();
        cfg.blocks.push(Block {
            criteria: Criteria::All,
            directives: Vec::new(),
        });
        cfg.parse_into(text, path, home, 0)?;
        Ok(cfg)
    }

    fn parse_into(
        &mut self,
        text: &str,
        path: &Path,
        home: Option<&Path>,
        depth: usize,
    ) -> Result<(), SshConfigError> {
        let invalid = |line: usize, message: String| SshConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let Some((keyword, args)) = split_line(raw).map_err(|m| invalid(line_no, m))? else {
                continue;
            };
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(invalid(line_no, "`Host` without a pattern".into()));
                    }
                    let patterns = args
                        .iter()
                        .map(|a| match a.strip_prefix('!') {
                            Some(p) => (true, p.to_ascii_lowercase()),
                            None => (false, a.to_ascii_lowercase()),
                        })
                        .collect();
                    self.blocks.push(Block {
                        criteria: Criteria::Host(patterns),
                        directives: Vec::new(),
                    });
                }
                "match" => {
                    let criteria = if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                        Criteria::All
                    } else {
                        self.notes.push(format!(
                            "{}:{line_no}: `Match {}` is not evaluated; its settings are ignored",
                            path.display(),
                            args.join(" ")
                        ));
                        Criteria::Never
                    };
                    self.blocks.push(Block {
                        criteria,
                        directives: Vec::new(),
                    });
                }
                "include" => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(invalid(line_no, "`Include` nested too deeply".into()));
                    }
                    // Directives after the included files continue the current block, whatever
                    // blocks the included files opened (OpenSSH restores its state the same way).
                    let resume = self.blocks.last().map(|b| b.criteria.clone());
                    for pattern in &args {
                        for file in include_files(pattern, path, home) {
                            let text = std::fs::read_to_string(&file).map_err(|source| {
                                SshConfigError::Read {
                                    path: file.clone(),
                                    source,
                                }
                            })?;
                            self.parse_into(&text, &file, home, depth + 1)?;
                        }
                    }
                    if let Some(criteria) = resume {
                        self.blocks.push(Block {
                            criteria,
                            directives: Vec::new(),
                        });
                    }
                }
                _ => {
                    validate(&keyword, &args).map_err(|m| invalid(line_no, m))?;
                    if let Some(block) = self.blocks.last_mut() {
                        block.directives.push(Directive {
                            keyword,
                            args,
                            raw: rest_of_line(raw),
                            file: path.to_path_buf(),
                            line: line_no,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything the config says about `host` (the name as the user gave it).
    pub fn lookup(&self, host: &str) -> HostConfig {
        let host_lc = host.to_ascii_lowercase();
        let mut out = HostConfig::default();
        for block in &self.blocks {
            let applies = match &block.criteria {
                Criteria::All => true,
                Criteria::Never => false,
                Criteria::Host(patterns) => host_matches(&host_lc, patterns),
            };
            if !applies {
                continue;
            }
            for d in &block.directives {
                apply(&mut out, d, host);
            }
        }
        out
    }
}

/// True when a positive pattern matches and no negated one does.
fn host_matches(host: &str, patterns: &[(bool, String)]) -> bool {
    let mut matched = false;
    for (negated, pattern) in patterns {
        if glob_match(pattern, host) {
            if *negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` matches any run of characters, `?` exactly one.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn apply(out: &mut HostConfig, d: &Directive, host: &str) {
    let first = d.args.first().cloned().unwrap_or_default();
    match d.keyword.as_str() {
        "hostname" if out.hostname.is_none() => {
            out.hostname = Some(expand_percent_h(&first, host));
        }
        "user" if out.user.is_none() => out.user = Some(first),
        "port" if out.port.is_none() => out.port = first.parse().ok(),
        "identityfile" => out.identity_files.push(first),
        "identitiesonly" if out.identities_only.is_none() => {
            out.identities_only = Some(first.eq_ignore_ascii_case("yes"));
        }
        // As in OpenSSH, whichever of ProxyJump and ProxyCommand comes first wins.
        "proxyjump" if out.proxy_jump.is_none() && out.proxy_command.is_none() => {
            out.proxy_jump = Some(first)
        }
        "proxycommand" if out.proxy_jump.is_none() && out.proxy_command.is_none() => {
            out.proxy_command = Some(d.raw.clone())
        }
        "certificatefile" => out.certificate_files.push(first),
        "userknownhostsfile" if out.user_known_hosts.is_none() => {
            out.user_known_hosts = Some(d.args.clone());
        }
        "globalknownhostsfile" if out.global_known_hosts.is_none() => {
            out.global_known_hosts = Some(d.args.clone());
        }
        "hostkeyalias" if out.host_key_alias.is_none() => out.host_key_alias = Some(first),
        "connecttimeout" if out.connect_timeout.is_none() => {
            out.connect_timeout = first.parse().ok().map(Duration::from_secs);
        }
        "serveraliveinterval" if out.server_alive_interval.is_none() => {
            out.server_alive_interval = first.parse().ok().map(Duration::from_secs);
        }
        "serveralivecountmax" if out.server_alive_count_max.is_none() => {
            out.server_alive_count_max = first.parse().ok();
        }
        _ => {}
    }
    // `d.file`/`d.line` are kept for future "set at" explanations.
    let _ = (&d.file, d.line);
}

fn expand_percent_h(value: &str, host: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
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

/// Rejects values of keywords we use that OpenSSH would reject too, so the user learns of them
/// here rather than through a confusing connection failure.
fn validate(keyword: &str, args: &[String]) -> Result<(), String> {
    let first = args.first().map(String::as_str);
    let needs_arg = [
        "hostname",
        "user",
        "port",
        "identityfile",
        "proxyjump",
        "proxycommand",
        "certificatefile",
        "userknownhostsfile",
        "globalknownhostsfile",
        "hostkeyalias",
        "connecttimeout",
        "serveraliveinterval",
        "serveralivecountmax",
        "identitiesonly",
    ];
    if needs_arg.contains(&keyword) && first.is_none() {
        return Err(format!("`{keyword}` needs a value"));
    }
    let first = first.unwrap_or_default();
    match keyword {
        "port" if first.parse::<u16>().map_or(true, |p| p == 0) => {
            Err(format!("bad port `{first}`"))
        }
        "connecttimeout" | "serveraliveinterval" | "serveralivecountmax"
            if first.parse::<u64>().is_err() =>
        {
            Err(format!(
                "`{keyword}` must be a whole number, found `{first}`"
            ))
        }
        _ => Ok(()),
    }
}

/// What follows the keyword (and an `=`) on a line, trimmed: OpenSSH takes `ProxyCommand`'s
/// value this way, quotes and all.
fn rest_of_line(line: &str) -> String {
    let trimmed = line.trim();
    let key_end = trimmed
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(trimmed.len());
    let rest = trimmed[key_end..].trim_start();
    rest.strip_prefix('=').unwrap_or(rest).trim().to_string()
}

/// Splits a line into a lowercased keyword and its arguments (`Key value`, `Key=value`,
/// double-quoted arguments). `None` for blank lines and comments.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let key_end = trimmed
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(trimmed.len());
    let keyword = trimmed[..key_end].to_ascii_lowercase();
    let mut rest = trimmed[key_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                arg.push(c);
            }
            if !closed {
                return Err("unterminated quote".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    Ok(Some((keyword, args)))
}

/// The files an `Include` argument names: `~` expanded, relative to `~/.ssh`, with `*` and `?`
/// in the last path component matched against the directory, sorted like glob(3).
fn include_files(pattern: &str, including: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let expanded = match (pattern.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(pattern),
    };
    let full = if expanded.is_absolute() {
        expanded
    } else {
        let base = home
            .map(|h| h.join(".ssh"))
            .or_else(|| including.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        base.join(expanded)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        };
    }
    let Some(dir) = full.parent() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("/test/config"), None).unwrap()
    }

    #[test]
    fn first_obtained_value_wins_and_identity_files_accumulate() {
        let c = cfg(
            "Host cp-*\n  User ops\n  Port 2222\n  IdentityFile ~/.ssh/cp\n\
                     Host *\n  User nobody\n  Port 22\n  IdentityFile ~/.ssh/id_ed25519\n",
        );
        let h = c.lookup("cp-1");
        assert_eq!(h.user.as_deref(), Some("ops"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.identity_files, ["~/.ssh/cp", "~/.ssh/id_ed25519"]);
        let other = c.lookup("db-1");
        assert_eq!(other.user.as_deref(), Some("nobody"));
        assert_eq!(other.identity_files, ["~/.ssh/id_ed25519"]);
    }

    /// ProxyJump and ProxyCommand: the first one obtained wins, as in OpenSSH; the command is
    /// the rest of its line, quotes and all.
    #[test]
    fn the_first_of_proxy_jump_and_proxy_command_wins() {
        let c = cfg(
            "Host a\n  ProxyCommand sh -c \"nc %h %p\" 2>/dev/null\n  ProxyJump j\n\
                     Host b\n  ProxyJump j\nHost *\n  ProxyCommand=socat - TCP:%h:%p\n  \
                     CertificateFile ~/.ssh/id-cert.pub\n",
        );
        let a = c.lookup("a");
        assert_eq!(
            a.proxy_command.as_deref(),
            Some("sh -c \"nc %h %p\" 2>/dev/null")
        );
        assert_eq!(a.proxy_jump, None);
        let b = c.lookup("b");
        assert_eq!(b.proxy_jump.as_deref(), Some("j"));
        assert_eq!(b.proxy_command, None);
        let other = c.lookup("x");
        assert_eq!(other.proxy_command.as_deref(), Some("socat - TCP:%h:%p"));
        assert_eq!(other.certificate_files, ["~/.ssh/id-cert.pub"]);
    }

    #[test]
    fn patterns_support_question_mark_and_negation() {
        let c = cfg("Host cp-? !cp-3\n  HostName %h.prod.example.com\n");
        assert_eq!(
            c.lookup("cp-1").hostname.as_deref(),
            Some("cp-1.prod.example.com")
        );
        assert_eq!(c.lookup("cp-3").hostname, None);
        assert_eq!(c.lookup("cp-10").hostname, None);
        // Only negated patterns never match on their own.
        let c = cfg("Host !bastion\n  User x\n");
        assert_eq!(c.lookup("cp-1").user, None);
    }

    #[test]
    fn equals_sign_quotes_case_and_comments() {
        let c = cfg(
            "# comment\nHOST=alias\n  hostname=\"10.0.0.1\"  # trailing\n  \
                     UserKnownHostsFile \"/a b/kh\" /c/kh2\n  ProxyJump ops@bastion:2200\n",
        );
        let h = c.lookup("ALIAS");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            h.user_known_hosts,
            Some(vec!["/a b/kh".to_string(), "/c/kh2".to_string()])
        );
        assert_eq!(h.proxy_jump.as_deref(), Some("ops@bastion:2200"));
    }

    #[test]
    fn global_directives_apply_to_every_host_and_match_blocks_are_skipped() {
        let c = cfg("User early\nMatch exec \"true\"\n  User matched\nMatch all\n  Port 2200\n");
        let h = c.lookup("anything");
        assert_eq!(h.user.as_deref(), Some("early"));
        assert_eq!(h.port, Some(2200));
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn bad_values_name_file_and_line() {
        let err =
            SshConfig::parse("Host a\n  Port banana\n", Path::new("/x/config"), None).unwrap_err();
        assert_eq!(err.to_string(), "/x/config:2: bad port `banana`");
        let err = SshConfig::parse("Host a\n  HostName \"open\n", Path::new("/x/config"), None)
            .unwrap_err();
        assert_eq!(err.to_string(), "/x/config:2: unterminated quote");
    }

    #[test]
    fn include_reads_globbed_files_in_order_and_restores_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("conf.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("10-a.conf"), "Host a\n  User from-a\n").unwrap();
        std::fs::write(
            d.join("20-b.conf"),
            "Host a b\n  User from-b\n  Port 2201\n",
        )
        .unwrap();
        let main = format!(
            "Host b\n  Include {}/conf.d/*.conf\n  HostName b.example\n",
            dir.path().display()
        );
        let c = SshConfig::parse(&main, &dir.path().join("config"), Some(dir.path())).unwrap();
        assert_eq!(c.lookup("a").user.as_deref(), Some("from-a"));
        let b = c.lookup("b");
        assert_eq!(b.user.as_deref(), Some("from-b"));
        // After the Include, the `Host b` block continues.
        assert_eq!(b.hostname.as_deref(), Some("b.example"));
        assert_eq!(c.lookup("a").hostname, None);
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("*", ""));
        assert!(glob_match("cp-*", "cp-1"));
        assert!(glob_match("*.example.com", "a.b.example.com"));
        assert!(glob_match("10.0.0.?", "10.0.0.7"));
        assert!(!glob_match("10.0.0.?", "10.0.0.17"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }
}
