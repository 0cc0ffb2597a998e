// Command lua-health runs an Argo CD health check the way Argo CD runs one set in argocd-cm: in
// gopher-lua, with the object as the global `obj`, only the libraries Argo CD opens for such scripts
// and a one-second budget. It prints the health the script returns as JSON.
//
// Usage: lua-health SCRIPT < object.json
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lua-health SCRIPT < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	exitOn(err)
	var obj map[string]any
	exitOn(json.NewDecoder(os.Stdin).Decode(&obj))
	result, err := run(string(script), obj)
	exitOn(err)
	exitOn(json.NewEncoder(os.Stdout).Encode(result))
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "lua-health:", err)
		os.Exit(1)
	}
}

func run(script string, obj map[string]any) (*health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	// Argo CD's set for scripts from argocd-cm (useOpenLibs unset): no string, math or io library.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	L.PreloadModule(lua.OsLibName, func(L *lua.LState) int {
		L.Push(L.SetFuncs(L.NewTable(), safeOsFuncs()))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", decode(L, obj))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	returned, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", L.Get(-1).Type())
	}
	var result health
	for field, into := range map[string]*string{"status": &result.Status, "message": &result.Message} {
		switch value := returned.RawGetString(field).(type) {
		case lua.LString:
			*into = string(value)
		case *lua.LNilType:
		default:
			return nil, fmt.Errorf("health %s is a %s, not a string", field, value.Type())
		}
	}
	switch result.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return &result, nil
	}
	return &health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
}

// openSafeOs registers os.time and os.date under the table library's name, as Argo CD's own does: a
// script reaches them only through require("os"), and so it must here too.
func openSafeOs(L *lua.LState) int {
	L.Push(L.RegisterModule(lua.TabLibName, safeOsFuncs()))
	return 1
}

// safeOsFuncs takes time and date from gopher-lua's os library, which Argo CD's safe copy follows.
func safeOsFuncs() map[string]lua.LGFunction {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Push(lua.LString(lua.OsLibName))
	scratch.Call(1, 1)
	lib := scratch.Get(-1).(*lua.LTable)
	funcs := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		funcs[name] = lib.RawGetString(name).(*lua.LFunction).GFunction
	}
	return funcs
}

// decode turns decoded JSON into Lua values as Argo CD's decodeValue does: objects and arrays become
// tables, numbers Lua numbers, null nil.
func decode(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := L.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(decode(L, item))
		}
		return table
	case map[string]any:
		table := L.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), decode(L, item))
		}
		return table
	}
	return lua.LNil
}
