#!/usr/bin/env python3
"""Prints the functions of one binary that ran in callgrind profiles, most instructions first, one mangled name
a line: the symbol ordering file of a release link (scripts/symbol-order).

usage: callgrind-functions.py BINARY_NAME PROFILE...

Callgrind writes names compressed ("fn=(12) name" once, then "fn=(12)"); a cost line counts for the function and
object named last, except the line after "calls=", which is the callee's inclusive cost. Recursion suffixes
("name'2") are dropped: the linker knows the plain symbol.
"""
import collections
import re
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


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip())
    names = functions(sys.argv[1], sys.argv[2:])
    if not names:
        sys.exit(f"callgrind-functions: no function of {sys.argv[1]} in {' '.join(sys.argv[2:])}")
    sys.stdout.write("".join(name + "\n" for name in names))


if __name__ == "__main__":
    main()
