# Loaded with Devel::NYTProf in every process of a pool or command handler that has
# profile = "nytprof" (PERL5OPT="-d:NYTProf -MSurgeNYTProf"; surge puts this directory on
# PERL5LIB). It makes a process that exits write a whole profile:
#
# NYTProf writes the profile from an END block. Starman's workers get SIGTERM twice when
# their pool instance stops: once from surge (to the process group) and once from their
# master. The first makes the worker `exit`; the second, arriving while END blocks run, kills
# it then, and the profile is cut short. So every `exit` compiled after this module first
# ignores the stop signals and finishes the profile (an XS call a signal cannot interrupt),
# then exits as it would have.
package SurgeNYTProf;
use strict;
use warnings;

our $VERSION = '1';

my $previous = defined &CORE::GLOBAL::exit ? \&CORE::GLOBAL::exit : undef;

no warnings 'redefine';
*CORE::GLOBAL::exit = sub {
    $SIG{$_} = 'IGNORE' for qw(TERM INT HUP QUIT);
    DB::finish_profile() if defined &DB::finish_profile;
    $previous ? $previous->(@_) : CORE::exit(@_ ? $_[0] : 0);
};

1;
