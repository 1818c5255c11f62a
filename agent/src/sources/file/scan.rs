//! Finds the paths the `include` globs match and the `exclude` globs do not. Owns only the
//! directory walk and the matching; what a path *is* (which file, whether it is new) is
//! the tailer's business.
//!
//! Patterns are absolute. Each is walked from its longest literal prefix (`/var/log/app`
//! for `/var/log/app/*.log`), down as many levels as the pattern has components after it,
//! or without a bound (but not through symbolic links to directories) when it holds `**`.
//! `*` and `?` do not match `/`, as in a shell.
//!
//! A directory that does not exist holds no files: that is information. A directory that
//! exists but cannot be listed (`EACCES`, `EMFILE`, `EIO` on a network file system, …) is
//! **no information**: [`Found::unlisted`] names it, and the caller must not take the files
//! it follows there for gone.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Deepest walk below a `**` prefix.
const MAX_DEPTH: usize = 32;

/// Where one pattern's walk starts and how deep it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Root {
    dir: PathBuf,
    /// Levels below `dir`; `None` for a pattern with `**`.
    depth: Option<usize>,
    /// The pattern has no glob characters: it names one file.
    literal: bool,
}

/// The compiled `include` / `exclude` globs of one source.
#[derive(Debug)]
pub struct Matcher {
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<Root>,
}

impl Matcher {
    /// Compiles the patterns. The configuration has validated them; one that still fails
    /// to compile is logged and left out rather than stopping the source.
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        let mut roots: Vec<Root> = include.iter().map(|p| root_of(p)).collect();
        roots.sort();
        roots.dedup();
        Matcher {
            include: build(include),
            exclude: build(exclude),
            roots,
        }
    }

    /// Whether `path` is included and not excluded.
    pub fn is_match(&self, path: &Path) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Every matching path that exists now, sorted, and the directories (or paths) that
    /// could not be looked at. A directory that does not exist is skipped: the glob may
    /// name one that does not exist yet.
    pub fn find(&self) -> Found {
        let mut found = Found::default();
        let mut paths = BTreeSet::new();
        for root in &self.roots {
            if root.literal {
                if self.is_match(&root.dir) {
                    paths.insert(root.dir.clone());
                }
                continue;
            }
            self.walk(&root.dir, root.depth, 0, &mut paths, &mut found.unlisted);
        }
        found.paths = paths.into_iter().collect();
        found.unlisted.sort_by(|a, b| a.0.cmp(&b.0));
        found.unlisted.dedup_by(|a, b| a.0 == b.0);
        found
    }

    fn walk(
        &self,
        dir: &Path,
        depth: Option<usize>,
        level: usize,
        found: &mut BTreeSet<PathBuf>,
        unlisted: &mut Vec<(PathBuf, io::Error)>,
    ) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => return,
            Err(e) => {
                unlisted.push((dir.to_path_buf(), e));
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    // The listing broke off: what it did not return is unknown.
                    unlisted.push((dir.to_path_buf(), e));
                    continue;
                }
            };
            let path = entry.path();
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if is_absent(&e) => continue,
                Err(e) => {
                    unlisted.push((path, e));
                    continue;
                }
            };
            let is_dir = if kind.is_symlink() {
                // A link to a directory is followed only at a bounded depth: `**` through
                // links could loop.
                depth.is_some() && fs::metadata(&path).is_ok_and(|m| m.is_dir())
            } else {
                kind.is_dir()
            };
            if is_dir {
                let deeper = match depth {
                    Some(d) => level + 1 < d,
                    None => level < MAX_DEPTH,
                };
                if deeper {
                    self.walk(&path, depth, level + 1, found, unlisted);
                }
            } else if self.is_match(&path) {
                found.insert(path);
            }
        }
    }
}

/// What one walk of the globs found.
#[derive(Debug, Default)]
pub struct Found {
    /// Matching paths, sorted.
    pub paths: Vec<PathBuf>,
    /// Directories (or single entries) that exist but could not be looked at, with why:
    /// files under them are neither found nor gone.
    pub unlisted: Vec<(PathBuf, io::Error)>,
}

impl Found {
    /// Whether `path` is at or under a place that could not be looked at.
    pub fn unsure(&self, path: &Path) -> bool {
        self.unlisted.iter().any(|(dir, _)| path.starts_with(dir))
    }
}

/// An error that means the thing is not there (rather than that it cannot be seen).
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn build(patterns: &[String]) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        match GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => {
                set.add(g);
            }
            Err(e) => tracing::error!(pattern = %p, error = %e, "bad glob left out"),
        }
    }
    set.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "globs could not be compiled; matching nothing");
        GlobSet::empty()
    })
}

fn has_glob_chars(component: &str) -> bool {
    component.contains(['*', '?', '[', '{', '\\'])
}

/// The literal directory a pattern starts in, and how deep below it matches can be.
fn root_of(pattern: &str) -> Root {
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let literal_len = parts.iter().take_while(|c| !has_glob_chars(c)).count();
    let mut dir = PathBuf::from("/");
    if literal_len == parts.len() {
        dir.extend(&parts);
        return Root {
            dir,
            depth: Some(0),
            literal: true,
        };
    }
    dir.extend(&parts[..literal_len]);
    let rest = &parts[literal_len..];
    let depth = if rest.iter().any(|c| c.contains("**")) {
        None
    } else {
        Some(rest.len())
    };
    Root {
        dir,
        depth,
        literal: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_walked_from_its_literal_prefix() {
        assert_eq!(
            root_of("/var/log/app/*.log"),
            Root {
                dir: "/var/log/app".into(),
                depth: Some(1),
                literal: false
            }
        );
        assert_eq!(root_of("/var/log/*/x.log").depth, Some(2));
        assert_eq!(root_of("/var/**/x.log").depth, None);
        assert!(root_of("/var/log/x.log").literal);
    }

    #[test]
    fn star_does_not_cross_directories_and_exclude_wins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("sub/deep")).unwrap();
        for f in ["a.log", "b.txt", "debug.log", "sub/c.log", "sub/deep/d.log"] {
            fs::write(d.join(f), b"x\n").unwrap();
        }
        let m = Matcher::new(
            &[format!("{}/*.log", d.display())],
            &[format!("{}/debug*.log", d.display())],
        );
        assert_eq!(m.find().paths, vec![d.join("a.log")]);
        let m = Matcher::new(&[format!("{}/**/*.log", d.display())], &[]);
        assert_eq!(
            m.find().paths,
            vec![
                d.join("a.log"),
                d.join("debug.log"),
                d.join("sub/c.log"),
                d.join("sub/deep/d.log")
            ]
        );
        let m = Matcher::new(&[format!("{}/sub/c.log", d.display())], &[]);
        assert_eq!(m.find().paths, vec![d.join("sub/c.log")]);
        let m = Matcher::new(&[format!("{}/missing/*.log", d.display())], &[]);
        let found = m.find();
        assert!(found.paths.is_empty());
        assert!(
            found.unlisted.is_empty(),
            "a missing directory is information"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_listed_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A path under a regular file: listing it fails with ENOTDIR, which means absent.
        fs::write(d.join("file"), b"x").unwrap();
        let m = Matcher::new(&[format!("{}/file/*.log", d.display())], &[]);
        assert!(m.find().unlisted.is_empty());
        // A directory with too long a name to list is no information.
        let long = format!("{}/{}/*.log", d.display(), "x".repeat(300));
        let found = Matcher::new(&[long], &[]).find();
        assert_eq!(found.unlisted.len(), 1, "{:?}", found.unlisted);
        assert!(found.unsure(&found.unlisted[0].0.join("app.log")));
    }
}
