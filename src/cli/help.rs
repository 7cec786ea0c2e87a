//! What `--help` says after each command's options: a few real invocations ("Examples:"), and for
//! `create` the rollout file format. The full reference is docs/cli.md.

/// `applyops --help`, after the commands.
pub const TOP: &str = "\
APPLY is an apply's id or its identifier; when it could be either (an apply whose identifier is \
another apply's id), say id:N or name:IDENTIFIER.

The database: --database-url, or APPLYOPS_DATABASE_URL, or DATABASE_URL (the environment keeps the \
password out of `ps`), or sqlite://applyops.db. Only `migrate` creates a database.

Colour: --color auto (the default: on a terminal, unless NO_COLOR is set and not empty), always or \
never.

Exit codes: 0 done as asked; 1 error; 2 usage; 3 the apply (or deployment) ended otherwise than \
asked (wait, watch); 4 timed out (wait, watch).

Examples:
  applyops migrate
  applyops create --file rollout.toml --dry-run
  applyops watch add-note-to-orders
  applyops stop add-note-to-orders --reason \"traffic peak\"

The full reference: docs/cli.md in the source tree; man pages: `make man`, then
`man -l target/man/applyops.1`.";

/// `migrate`.
pub const MIGRATE: &str = "\
Examples:
  applyops migrate
  APPLYOPS_DATABASE_URL=mysql://app@mysql-1.example.com:3306/applyops applyops migrate
  applyops migrate --revert --yes          # the newest migration; --force when it drops rows";

/// `revert`.
pub const REVERT: &str = "\
Examples:
  applyops revert add-note-to-orders --reason \"latency after cutover\"
  applyops revert id:42 --deployment us-east --by alice

To revert the newest database migration instead: applyops migrate --revert --yes";

/// `list`.
pub const LIST: &str = "\
Examples:
  applyops list add-note-to-orders
  applyops list id:42 | jq -r '.deployment + \" \" + .state'";

/// `applies`.
pub const APPLIES: &str = "\
Examples:
  applyops applies --state running --state paused
  applyops applies --database shop --environment production --limit 20
  applyops applies --json | jq -r '.applies[].identifier'";

/// `status`.
pub const STATUS: &str = "\
Examples:
  applyops status add-note-to-orders
  applyops status id:42 --json";

/// `watch`.
pub const WATCH: &str = "\
Examples:
  applyops watch add-note-to-orders
  applyops watch 3 4 5 --timeout 3600
  applyops watch add-note-to-orders --json > progress.jsonl";

/// `wait`.
pub const WAIT: &str = "\
Examples:
  applyops wait add-note-to-orders --state completed --timeout 1800
  applyops wait add-note-to-orders --deployment us-east --state waiting_for_cutover";

/// `create`, short (`-h`).
pub const CREATE: &str = "\
Examples:
  applyops create --file rollout.toml --dry-run     # check it; no database needed
  applyops create --file rollout.toml
  applyops create --file rollout.json --json

`--help` shows the rollout file format.";

/// `create --help`: the examples and the rollout file format, every field.
pub const CREATE_LONG: &str = "\
Examples:
  applyops create --file rollout.toml --dry-run     # check it; no database needed
  applyops create --file rollout.toml
  applyops create --file rollout.json --json

Rollout file: TOML (.toml) or JSON (.json, the same fields), told by the extension. Every field,
defaults in brackets; a field not listed here is refused, with the closest known one:

  apply_identifier = \"add-note-to-orders\"  # unique name of the apply: 1-255 chars, no trailing space
  database_name = \"shop\"                   # the logical database: 1-255 chars
  environment = \"production\"               # 1-255 chars
  requested_by = \"alice\"                   # who asks: 1-255 chars
  deployment = \"us-east\"                   # the apply's deployment [the first operation's]
  defer_cutover = false                    # true: every cutover waits for `applyops cutover` [false]
  max_concurrency = 2                      # deployments driven at once: 1-1000 [unlimited]
  max_attempts = 10                        # the retry budget: 0-1000 [10]

  [[operations]]                           # 1-1000, in claim order, one per deployment
  deployment = \"us-east\"                   # 1-255 chars, no trailing space
  target = \"orders-primary\"                # detail: at most 255 chars [empty]
  cutover_policy = \"rolling\"               # rolling | barrier | parallel [rolling]
  on_failure = \"halt\"                      # halt | pause | continue [halt]
  tasks = [                                # at most 1000 per operation, 10000 in all [none]
    { table_name = \"orders\", ddl = \"ALTER TABLE orders ADD COLUMN note TEXT\" },
  ]                                        # table_name: 1-255 chars; ddl: 1-65535 bytes

  [[operations]]
  deployment = \"us-west\"

The whole rollout carries at most 16 MiB of DDL. The full format: docs/cli.md.";

/// `stop`.
pub const STOP: &str = "\
Examples:
  applyops stop add-note-to-orders --reason \"traffic peak\"
  applyops stop id:42 --deployment eu-central --by alice";

/// `start`.
pub const START: &str = "\
Examples:
  applyops start add-note-to-orders
  applyops start id:42 --deployment eu-central --reason \"peak over\"";

/// `cancel`.
pub const CANCEL: &str = "\
Examples:
  applyops cancel add-note-to-orders --reason \"superseded by add-notes-v2\"
  applyops cancel id:42 --deployment ap-south";

/// `release`.
pub const RELEASE: &str = "\
Examples:
  applyops release add-note-to-orders --reason \"ap-south failure understood\"";

/// `cutover`.
pub const CUTOVER: &str = "\
Examples:
  applyops cutover add-note-to-orders --reason \"every deployment at the barrier\"
  applyops cutover id:42 --deployment us-east";

/// `skip-revert`.
pub const SKIP_REVERT: &str = "\
Examples:
  applyops skip-revert add-note-to-orders
  applyops skip-revert id:42 --deployment us-east --reason \"verified\"";

/// `retry`.
pub const RETRY: &str = "\
Examples:
  applyops retry add-note-to-orders --deployment ap-south --reason \"transient failure\"";

/// `leases`.
pub const LEASES: &str = "\
Examples:
  applyops leases
  applyops leases --owner vm-3242 --json";

/// `completions`.
pub const COMPLETIONS: &str = "\
Examples:
  applyops completions bash > ~/.local/share/bash-completion/completions/applyops
  applyops completions zsh > ~/.zfunc/_applyops      # with fpath+=(~/.zfunc) before compinit
  applyops completions fish > ~/.config/fish/completions/applyops.fish";

/// `man` (hidden: `make man` runs it).
pub const MAN: &str = "\
Examples:
  applyops man --out-dir target/man
  man target/man/applyops.1";

#[cfg(test)]
mod tests {
    use super::*;

    /// The annotated TOML of [`CREATE_LONG`], without its indentation.
    fn format_example() -> String {
        let start = CREATE_LONG.find("  apply_identifier").expect("the example");
        let end = CREATE_LONG.find("\n\nThe whole rollout").expect("its end");
        CREATE_LONG[start..end]
            .lines()
            .map(|line| line.strip_prefix("  ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_format_example_is_a_valid_rollout() {
        let rollout: applyops::models::NewRollout = toml::from_str(&format_example()).unwrap();
        applyops::store::applies::validate_rollout(&rollout).unwrap();
        assert_eq!(rollout.operations.len(), 2);
        assert_eq!(rollout.max_concurrency, Some(2));
    }

    #[test]
    fn the_format_example_sets_every_field_the_parser_knows() {
        let example = format_example();
        for (level, fields) in super::super::rollout_file::known_fields() {
            for field in fields {
                assert!(
                    example.lines().any(|line| {
                        line.starts_with(&format!("[[{field}]]"))
                            || line.trim_start().starts_with(&format!("{field} ="))
                            || line.contains(&format!("{{ {field} ="))
                            || line.contains(&format!(", {field} ="))
                    }),
                    "{level}.{field} is not in the example:\n{example}"
                );
            }
        }
    }
}
