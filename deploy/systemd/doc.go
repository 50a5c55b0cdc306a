// Package systemd holds jobgate's systemd units (*.service) and the test
// that checks them with systemd-analyze verify.
package systemd
