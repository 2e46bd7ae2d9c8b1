#!/usr/bin/perl
# Perl's Net::POP3 with Authen::SASL against Poplar, as Perl scripts in the wild use it.
# Usage: net_pop3.pl PORT MECHANISM USER PASSWORD   (MECHANISM: PLAIN, LOGIN, CRAM-MD5 or apop)
use strict;
use warnings;
use Net::POP3;
use Authen::SASL;

my ($port, $mech, $user, $pass) = @ARGV;
my $pop = Net::POP3->new("127.0.0.1", Port => $port, Timeout => 30) or die "cannot connect\n";
my $ok;
if ($mech eq 'apop') {
    $ok = $pop->apop($user, $pass);
} else {
    my $sasl = Authen::SASL->new(mechanism => $mech, callback => { user => $user, pass => $pass, authname => $user });
    $ok = $pop->auth($sasl);
}
die "$mech login failed: " . $pop->message unless $ok;
my ($count) = $pop->popstat;
die "STAT failed\n" unless defined $count;
my $lines = $pop->get(1) or die "RETR 1 failed\n";
$pop->quit;
print "$mech ok: $count messages, first has " . scalar(@$lines) . " lines\n";
