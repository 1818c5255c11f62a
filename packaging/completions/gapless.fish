# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gapless_global_optspecs
    string join \n h/help V/version
end

function __fish_gapless_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gapless_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gapless_using_subcommand
    set -l cmd (__fish_gapless_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gapless -n "__fish_gapless_needs_command" -s h -l help -d 'Print help'
complete -c gapless -n "__fish_gapless_needs_command" -s V -l version -d 'Print version'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "run" -d 'Run the agent until SIGTERM (or, with a stdin source, until stdin is delivered)'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "validate" -d 'Check a config file without starting anything: syntax, keys, values, that data_dir is writable and that files it names are readable. Exits 1 with the problems'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "status" -d 'Summarise a running agent: per sink the backlog, oldest undelivered age, delivery rate, time to drain and last error; per source the events in; WAL usage and drops. Exits 1 when delivery is unhealthy'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "top" -d 'A live view of a running agent in the terminal: per sink backlog, oldest undelivered age, delivery rate with its history, last error and health; per source events/s; WAL usage and drops. `q` quits, `Tab`/arrows choose the sink. Exits 1 when the agent stops answering'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "dead-letter" -d 'Batches a destination rejected for good (4xx), kept in data_dir/dead-letter/<sink>/'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "verify-stream" -d 'Check captured batches (NDJSON events, or one `{"headers":…,"events":[…]}` per line) for seqs missing without a gap record, and for duplicates. Events passed on by a relay (with `origin_agent_id`) are also checked per origin agent. Exits 1 on a silent hole'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "completions" -d 'Print a shell completion script (the .deb installs them already)'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "man" -d 'Print the man page (roff): gapless(1), or with a subcommand gapless-<subcommand>(1). The .deb installs them'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "wal" -d 'Look into the write-ahead log (stop the agent first: the WAL is locked while it runs)'
complete -c gapless -n "__fish_gapless_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand run" -s c -l config -d 'The config file' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand validate" -s c -l config -d 'The config file' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand status" -s c -l config -d 'The config file, for `api.address` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand status" -l api -d 'The agent\'s API address (overrides the config\'s `api.address`), like 127.0.0.1:8686' -r
complete -c gapless -n "__fish_gapless_using_subcommand status" -l json -d 'Print JSON instead of text'
complete -c gapless -n "__fish_gapless_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand top" -s c -l config -d 'The config file, for `api.address` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand top" -l api -d 'The agent\'s API address (overrides the config\'s `api.address`), like 127.0.0.1:8686' -r
complete -c gapless -n "__fish_gapless_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and not __fish_seen_subcommand_from list replay help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and not __fish_seen_subcommand_from list replay help" -f -a "list" -d 'List a sink\'s dead-lettered batches'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and not __fish_seen_subcommand_from list replay help" -f -a "replay" -d 'Send a sink\'s dead-lettered batches again (after fixing the cause), removing each once accepted; stops at the first failure'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and not __fish_seen_subcommand_from list replay help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from list" -l sink -d 'The sink\'s name' -r
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from list" -s c -l config -d 'The config file (for data_dir)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from replay" -l sink -d 'The sink\'s name' -r
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from replay" -s c -l config -d 'The config file (for data_dir and the sink\'s uri, credentials and TLS)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from help" -f -a "list" -d 'List a sink\'s dead-lettered batches'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from help" -f -a "replay" -d 'Send a sink\'s dead-lettered batches again (after fixing the cause), removing each once accepted; stops at the first failure'
complete -c gapless -n "__fish_gapless_using_subcommand dead-letter; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand verify-stream" -l seq-field -d 'The sink\'s seq_field' -r
complete -c gapless -n "__fish_gapless_using_subcommand verify-stream" -l from -d 'The seq the stream must start at (default: where it starts)' -r
complete -c gapless -n "__fish_gapless_using_subcommand verify-stream" -l json -d 'Print JSON'
complete -c gapless -n "__fish_gapless_using_subcommand verify-stream" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -f -a "inspect" -d 'Segments, sizes, sequence numbers and each cursor\'s backlog, as JSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -f -a "verify" -d 'Check every segment header and record checksum; list damaged ranges and the sequence numbers lost, and a dirty tail (bytes after the last record that hold no record: no seq lost). Read-only: changes no file; refuses while an agent runs on the WAL. Exits 0 if nothing is damaged (a dirty tail is not damage), 1 if something is, 2 if the WAL could not be checked'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -f -a "dump" -d 'Print records as NDJSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -f -a "forget-cursor" -d 'Delete the cursor of a sink that was removed from the config, releasing the backlog only it held'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and not __fish_seen_subcommand_from inspect verify dump forget-cursor help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from inspect" -l data-dir -d 'The agent\'s data_dir (overrides the config\'s)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from inspect" -s c -l config -d 'The config file, for `data_dir` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from verify" -l data-dir -d 'The agent\'s data_dir (overrides the config\'s)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from verify" -s c -l config -d 'The config file, for `data_dir` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from dump" -l data-dir -d 'The agent\'s data_dir (overrides the config\'s)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from dump" -s c -l config -d 'The config file, for `data_dir` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from dump" -l from -d 'First sequence number to print (default: the oldest)' -r
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from dump" -l limit -d 'Most records to print' -r
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from dump" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from forget-cursor" -l data-dir -d 'The agent\'s data_dir (overrides the config\'s)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from forget-cursor" -s c -l config -d 'The config file, for `data_dir` (default /etc/gapless/gapless.toml when it exists)' -r -F
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from forget-cursor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Segments, sizes, sequence numbers and each cursor\'s backlog, as JSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check every segment header and record checksum; list damaged ranges and the sequence numbers lost, and a dirty tail (bytes after the last record that hold no record: no seq lost). Read-only: changes no file; refuses while an agent runs on the WAL. Exits 0 if nothing is damaged (a dirty tail is not damage), 1 if something is, 2 if the WAL could not be checked'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "dump" -d 'Print records as NDJSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "forget-cursor" -d 'Delete the cursor of a sink that was removed from the config, releasing the backlog only it held'
complete -c gapless -n "__fish_gapless_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "run" -d 'Run the agent until SIGTERM (or, with a stdin source, until stdin is delivered)'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "validate" -d 'Check a config file without starting anything: syntax, keys, values, that data_dir is writable and that files it names are readable. Exits 1 with the problems'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "status" -d 'Summarise a running agent: per sink the backlog, oldest undelivered age, delivery rate, time to drain and last error; per source the events in; WAL usage and drops. Exits 1 when delivery is unhealthy'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "top" -d 'A live view of a running agent in the terminal: per sink backlog, oldest undelivered age, delivery rate with its history, last error and health; per source events/s; WAL usage and drops. `q` quits, `Tab`/arrows choose the sink. Exits 1 when the agent stops answering'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "dead-letter" -d 'Batches a destination rejected for good (4xx), kept in data_dir/dead-letter/<sink>/'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "verify-stream" -d 'Check captured batches (NDJSON events, or one `{"headers":…,"events":[…]}` per line) for seqs missing without a gap record, and for duplicates. Events passed on by a relay (with `origin_agent_id`) are also checked per origin agent. Exits 1 on a silent hole'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "completions" -d 'Print a shell completion script (the .deb installs them already)'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "man" -d 'Print the man page (roff): gapless(1), or with a subcommand gapless-<subcommand>(1). The .deb installs them'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "wal" -d 'Look into the write-ahead log (stop the agent first: the WAL is locked while it runs)'
complete -c gapless -n "__fish_gapless_using_subcommand help; and not __fish_seen_subcommand_from run validate status top dead-letter verify-stream completions man wal help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from dead-letter" -f -a "list" -d 'List a sink\'s dead-lettered batches'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from dead-letter" -f -a "replay" -d 'Send a sink\'s dead-lettered batches again (after fixing the cause), removing each once accepted; stops at the first failure'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "inspect" -d 'Segments, sizes, sequence numbers and each cursor\'s backlog, as JSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "verify" -d 'Check every segment header and record checksum; list damaged ranges and the sequence numbers lost, and a dirty tail (bytes after the last record that hold no record: no seq lost). Read-only: changes no file; refuses while an agent runs on the WAL. Exits 0 if nothing is damaged (a dirty tail is not damage), 1 if something is, 2 if the WAL could not be checked'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "dump" -d 'Print records as NDJSON. Read-only'
complete -c gapless -n "__fish_gapless_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "forget-cursor" -d 'Delete the cursor of a sink that was removed from the config, releasing the backlog only it held'
