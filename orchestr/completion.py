"""Shell completion: a small script per shell that asks `orchestr __complete WORDS...` what may come next.

The answer comes from the command line parser itself (commands, flags, choices), and from the runtimes for
namespaces and container names, so the scripts never go stale. `__files__` asks the shell for file names.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

FILES = "__files__"

BASH = """\
# orchestr completion for bash: . <(orchestr completion bash)
_orchestr_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" found IFS=$'\\n'
    found=$(orchestr __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
    if [[ $found == __files__ ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$found" -- "$cur"))
    fi
}
complete -o filenames -F _orchestr_complete orchestr
"""

ZSH = """\
#compdef orchestr
# orchestr completion for zsh: . <(orchestr completion zsh), or save as _orchestr in a directory of $fpath
_orchestr() {
    local -a found
    found=("${(@f)$(orchestr __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ $found[1] == __files__ ]]; then
        _files
    else
        compadd -- $found
    fi
}
if (( $+functions[compdef] )); then compdef _orchestr orchestr; fi
"""

FISH = """\
# orchestr completion for fish: orchestr completion fish | source
function __orchestr_complete
    set -l found (orchestr __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)
    if test "$found" = __files__
        __fish_complete_path (commandline -ct)
    else
        printf '%s\\n' $found
    end
end
complete -c orchestr -f -a '(__orchestr_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


class Ask:
    """What the runtimes must tell: the namespaces, or the containers of one (with svc/NAME for logs)."""

    def __init__(self, what: str, namespace: str = "default", services: bool = False) -> None:
        self.what, self.namespace, self.services = what, namespace, services


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {k: v for k, v in action.choices.items() if not k.startswith("_")}
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def candidates(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str] | str | Ask:
    """What may stand where the last of words (the word being completed, maybe '') is: a list, FILES or an Ask."""
    *context, current = words or [""]
    commands: list[str] = []
    namespace = "default"
    positionals = 0
    i = 0
    while i < len(context):
        word = context[i]
        options = _options(parser)
        action = options.get(word.split("=", 1)[0]) if word.startswith("-") else None
        if action is not None:
            if action.nargs != 0 and "=" not in word:
                if i + 1 == len(context):  # the word being completed is this option's value
                    return _value(action)
                if action.dest == "namespace":
                    namespace = context[i + 1]
                i += 1
        elif not word.startswith("-"):
            sub = _subparsers(parser)
            if word in sub and not positionals:
                parser, positionals = sub[word], 0
                commands.append(word)
            else:
                positionals += 1
        i += 1
    if current.startswith("-"):
        return sorted(_options(parser))
    sub = _subparsers(parser)
    if sub:
        return sorted(sub)
    wanted = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    if positionals >= len(wanted) and not (wanted and wanted[-1].nargs in ("*", "+", argparse.REMAINDER)):
        return []
    action = wanted[min(positionals, len(wanted) - 1)] if wanted else None
    if action is None:
        return []
    if action.choices:
        return list(action.choices)
    if action.dest in ("name", "names") and commands[:1] != ["run"]:
        return Ask("containers", namespace, services=commands[:1] == ["logs"])
    if action.dest == "path":
        return FILES
    return []


def _value(action: argparse.Action) -> list[str] | str | Ask:
    if action.choices:
        return list(action.choices)
    if action.dest in ("files", "state_dir"):
        return FILES
    if action.dest == "namespace":
        return Ask("namespaces")
    if action.dest == "runtime":
        from .plugins import offers

        return sorted({r.name for r in offers()})
    return []


async def answer(oc, ask: Ask) -> list[str]:
    """The namespaces, or the containers (and services) of a namespace, that the runtimes hold now."""
    containers = await oc.get(None if ask.what == "namespaces" else ask.namespace)
    if ask.what == "namespaces":
        return sorted({c.namespace for c in containers})
    names = [c.name for c in containers]
    if ask.services:
        names += sorted({f"svc/{c.service}" for c in containers if not c.oneoff})
    return names
