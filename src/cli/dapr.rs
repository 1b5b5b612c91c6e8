//! Dapr's calling convention for Sentry.
//!
//! Dapr's chart runs the image's `/sentry` with flags and no subcommand
//! (`--mode kubernetes --log-level info ...`), and Dapr's integration framework passes Go's
//! single-dash spelling (`-port=50001`). Dapr's sentry reads its flags with pflag after
//! doubling every single leading dash, so both spellings mean the same there. Sigil does the
//! same whenever it is called the way Dapr calls Sentry, so that swapping the image needs no
//! change on the Dapr side: the arguments are then exactly `sigil serve`'s flags.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Flags that keep their top-level meaning when they come first (`sigil --help`).
const TOP_LEVEL_FLAGS: [&str; 4] = ["-h", "--help", "-V", "--version"];

/// When `argv` is a Dapr-style Sentry invocation, the argument list to parse as
/// `sigil serve` (program name first, single dashes doubled); otherwise `None`.
///
/// Dapr-style means the program is called `sentry` (the image's `/sentry`), or the first
/// argument is a flag other than help/version.
pub fn sentry_invocation(argv: &[OsString]) -> Option<Vec<OsString>> {
    let program = argv.first()?;
    let called_sentry = Path::new(program).file_name() == Some(OsStr::new("sentry"));
    let first_is_flag = argv.get(1).is_some_and(|a| {
        let a = a.to_string_lossy();
        a.starts_with('-') && !TOP_LEVEL_FLAGS.contains(&a.as_ref())
    });
    if !called_sentry && !first_is_flag {
        return None;
    }
    let mut out = Vec::with_capacity(argv.len());
    out.push(program.clone());
    out.extend(argv[1..].iter().map(|a| double_single_dash(a)));
    Some(out)
}

/// `-port=1` -> `--port=1`; `--port`, `-`, `-p` and non-flags are left alone. As Dapr's
/// own rewrite, this applies to every argument: Sentry takes no positional arguments, so a
/// value that starts with a dash can only be given as `-flag=-value`.
fn double_single_dash(arg: &OsStr) -> OsString {
    match arg.to_str() {
        Some(s) if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") => {
            let mut doubled = OsString::from("-");
            doubled.push(s);
            doubled
        }
        _ => arg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn rewritten(args: &[&str]) -> Option<Vec<String>> {
        sentry_invocation(&argv(args))
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn subcommands_and_help_keep_their_meaning() {
        assert_eq!(rewritten(&["sigil"]), None);
        assert_eq!(rewritten(&["sigil", "serve", "-port=1"]), None);
        assert_eq!(rewritten(&["sigil", "ca", "init"]), None);
        assert_eq!(rewritten(&["/usr/bin/sigil", "--help"]), None);
        assert_eq!(rewritten(&["sigil", "-V"]), None);
    }

    #[test]
    fn a_first_flag_means_serve_with_go_spelling() {
        assert_eq!(
            rewritten(&[
                "sigil",
                "-port=50001",
                "--mode",
                "kubernetes",
                "-jwt-enabled=true"
            ]),
            Some(
                [
                    "sigil",
                    "--port=50001",
                    "--mode",
                    "kubernetes",
                    "--jwt-enabled=true"
                ]
                .map(String::from)
                .to_vec()
            )
        );
    }

    #[test]
    fn the_program_name_sentry_means_serve() {
        assert_eq!(rewritten(&["/sentry"]), Some(vec!["/sentry".to_string()]));
        assert_eq!(
            rewritten(&["/sentry", "-log-level", "info"]),
            Some(
                ["/sentry", "--log-level", "info"]
                    .map(String::from)
                    .to_vec()
            )
        );
        // Even `--help` under that name is Sentry's help, i.e. serve's.
        assert_eq!(
            rewritten(&["sentry", "--help"]),
            Some(["sentry", "--help"].map(String::from).to_vec())
        );
    }

    #[test]
    fn short_and_bare_dashes_are_left_alone() {
        assert_eq!(
            rewritten(&["sentry", "-", "-h", "value"]),
            Some(["sentry", "-", "-h", "value"].map(String::from).to_vec())
        );
    }
}
