// Wrapper module: gopher-lua, the Lua VM Argo CD runs health checks in, to test ours in it.
module modelpilot.io/tests/support/lua-health

go 1.26

require github.com/yuin/gopher-lua v1.1.2
