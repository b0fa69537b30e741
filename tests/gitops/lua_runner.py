"""Run an Argo CD Lua health script with a real Lua interpreter, as Argo CD does.

Argo CD (gopher-lua, Lua 5.1) sets the live object as the global ``obj``, runs the script as
a chunk and reads the table it returns; its sandbox has no ``os`` or ``io``. The runner gives
the script the same: an environment with only the base functions and the string, table and
math libraries, so a script that needs more fails here too.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Lua 5.1 first: it is the dialect gopher-lua implements.
LUA_BINARIES = ("lua5.1", "lua5.4", "lua5.3", "lua")
APT_PACKAGE = "lua5.1"

_WRAPPER = """
local source = assert(io.open(arg[1])):read("*a")
local env = {
  obj = %(obj)s,
  ipairs = ipairs, pairs = pairs, next = next, type = type, tostring = tostring,
  tonumber = tonumber, error = error, pcall = pcall, select = select, unpack = unpack,
  string = string, table = table, math = math,
}
local chunk
if setfenv then
  chunk = assert(loadstring(source, "=health.lua"))
  setfenv(chunk, env)
else
  chunk = assert(load(source, "=health.lua", "t", env))
end
local hs = chunk()
assert(type(hs) == "table", "the health script must return a table")
io.write(tostring(hs.status), "\\n", tostring(hs.message or ""))
"""


class LuaUnavailable(RuntimeError):
    """No Lua interpreter on PATH."""


def lua_binary() -> str:
    for name in LUA_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise LuaUnavailable(
        f"no Lua interpreter ({', '.join(LUA_BINARIES)}); apt-get install -y {APT_PACKAGE}"
    )


def _string(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= code < 127:
            out.append(char)
        else:  # Lua 5.1 string escapes are decimal bytes
            out.extend(f"\\{byte}" for byte in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


def to_lua(value: Any) -> str:
    """A Lua table constructor for JSON-like data (null becomes an absent field, as in Argo)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} has no JSON (or Lua literal) form")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        fields = (f"[{_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"cannot pass {type(value).__name__} to Lua")


def run_health_check(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) the script returns for ``obj``."""
    result = subprocess.run(
        [lua_binary(), "-", str(script)],
        input=_WRAPPER % {"obj": to_lua(obj)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"lua failed (exit {result.returncode}): {result.stderr.strip()}")
    status, _, message = result.stdout.partition("\n")
    return status, message
