#!/usr/bin/env python3
"""Prints the functions of one binary that ran in callgrind profiles, most instructions first, one mangled name
a line: the symbol ordering file of a release link (scripts/symbol-order).

usage: callgrind-functions.py [--linked BINARY --group-script FILE] BINARY_NAME PROFILE...

The linker orders by symbol name and puts a whole input section where its first listed name is. Two kinds of hot
code cannot be placed that way: local helpers that many objects define under one name ("$sSqwxx", outlined
copies), whose name would also drag every prebuilt object that holds one in a single monolithic .text section
(Foundation's) into the hot region, cold code and all; and the compiler's private functions (".L__unnamed_3",
".Lobjectdestroy"), which have no symbol at all. With --linked (the binary as linked, to find the names it defines
more than once), those are left out of the order and FILE gets a linker script that gathers them, by section name
(so only function sections match), in one output section just before .text.

Callgrind writes names compressed ("fn=(12) name" once, then "fn=(12)"); a cost line counts for the function and
object named last, except the line after "calls=", which is the callee's inclusive cost. Recursion suffixes
("name'2") are dropped: the linker knows the plain symbol.
"""
import argparse
import collections
import re
import subprocess
import sys

NAMED = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")
RECURSION = re.compile(r"'\d+$")


def functions(binary, paths):
    cost = collections.Counter()
    for path in paths:
        names = {"ob": {}, "fn": {}}
        current = {"ob": None, "fn": None}
        inclusive = False
        with open(path, errors="replace") as profile:
            for line in profile:
                named = NAMED.match(line.rstrip("\n"))
                if named:
                    called, kind, number, name = named.groups()
                    if name is not None:
                        names[kind][number] = name
                    if not called:
                        current[kind] = names[kind].get(number)
                    continue
                if line.startswith("calls="):
                    inclusive = True
                    continue
                if not line[:1].isdigit() and line[:1] not in "+-":
                    continue
                fields = line.split()
                if len(fields) < 2 or not fields[1].isdigit():
                    continue
                if inclusive:
                    inclusive = False
                    continue
                obj, function = current["ob"], current["fn"]
                if obj and function and obj.rsplit("/", 1)[-1] == binary:
                    cost[RECURSION.sub("", function)] += int(fields[1])
    return [name for name, instructions in cost.most_common() if instructions > 0]


def defined_more_than_once(binary):
    symbols = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    counts = collections.Counter(fields[2] for fields in map(str.split, symbols.splitlines()) if len(fields) == 3)
    return {name for name, count in counts.items() if count > 1}


def group_script(names):
    patterns = ["*(.text..L*)"] + [f'*(".text.{name}")' for name in names]
    body = "".join(f"    {pattern}\n" for pattern in patterns)
    return (f"/* Made by scripts/callgrind-functions.py: hot code the symbol ordering file cannot place. */\n"
            f"SECTIONS {{\n  .text.hot.group : {{\n{body}  }}\n}} INSERT BEFORE .text;\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--linked", help="the binary as linked, to find the names it defines more than once")
    parser.add_argument("--group-script", help="where to write the linker script for what the order cannot place")
    parser.add_argument("binary_name")
    parser.add_argument("profiles", nargs="+")
    options = parser.parse_args()
    if bool(options.linked) != bool(options.group_script):
        parser.error("--linked and --group-script go together")
    names = functions(options.binary_name, options.profiles)
    if not names:
        sys.exit(f"callgrind-functions: no function of {options.binary_name} in {' '.join(options.profiles)}")
    if options.linked:
        shared = defined_more_than_once(options.linked)
        with open(options.group_script, "w") as script:
            script.write(group_script([name for name in names if name in shared]))
        names = [name for name in names if name not in shared]
    sys.stdout.write("".join(name + "\n" for name in names))


if __name__ == "__main__":
    main()
