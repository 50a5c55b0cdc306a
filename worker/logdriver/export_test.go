package logdriver

// Ship is ship, for the external tests.
var Ship = ship
