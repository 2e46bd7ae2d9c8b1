//! Bulgarian: every [`Text`] (the match has no catch-all, so a new key must be written here).
//! Counted nouns take the count form after every number but 1 (1 съобщение, 2 съобщения;
//! 1 октет, 320 октета).

use super::Text;
use crate::command::ParseError;
use std::fmt::{self, Formatter};

fn messages(n: usize) -> &'static str {
    if n == 1 {
        "съобщение"
    } else {
        "съобщения"
    }
}

fn octets(n: u64) -> &'static str {
    if n == 1 { "октет" } else { "октета" }
}

pub(super) fn write(f: &mut Formatter<'_>, text: Text<'_>) -> fmt::Result {
    let s = match text {
        Text::Greeting => "POP3 сървърът Poplar е готов",
        Text::SigningOff => "POP3 сървърът Poplar приключва",
        Text::SignedOff { left: 0 } => "POP3 сървърът Poplar приключва (пощенската кутия е празна)",
        Text::SignedOff { left } => {
            return write!(
                f,
                "POP3 сървърът Poplar приключва (остават {left} {})",
                messages(left)
            );
        }
        Text::CommitPartial => {
            "Някои изтрити съобщения не бяха премахнати; ще бъдат предложени отново"
        }
        Text::SendPassword => "Изпратете паролата си",
        Text::SendUserFirst => "Първо изпратете USER",
        Text::ApopDisabled => "APOP не е разрешен на този сървър",
        Text::TlsAlreadyActive => "TLS вече е активен",
        Text::TlsUnavailable => "TLS не е наличен на този сървър",
        Text::BeginTls => "Започнете договарянето на TLS",
        Text::Utf8Enabled => "UTF8 е включен",
        Text::PlaintextDisallowed { stls_offered: true } => {
            "Удостоверяване с некриптирана парола не е позволено по незащитена връзка; първо използвайте STLS"
        }
        Text::PlaintextDisallowed {
            stls_offered: false,
        } => "Удостоверяване с некриптирана парола не е позволено по незащитена връзка",
        Text::MechanismsFollow => "Следват поддържаните механизми",
        Text::UnsupportedMechanism => "Неподдържан механизъм за удостоверяване",
        Text::InvalidInitialResponse => "Невалиден base64 в началния отговор",
        Text::AuthCancelled => "Удостоверяването е прекратено",
        Text::InvalidSaslResponse => "Невалиден base64 в отговора на SASL",
        Text::AuthFailed => "Неуспешно удостоверяване",
        Text::LoginDelay => "Влизали сте твърде скоро; изчакайте, преди да влезете отново",
        Text::AuthTemporary => "Удостоверяването временно не е достъпно; опитайте отново по-късно",
        Text::AuthProtocol => "Обменът за удостоверяване е неуспешен",
        Text::TooManyConnections => {
            "Твърде много връзки за този потребител; затворете някои и опитайте отново"
        }
        Text::TooManyFailures => {
            "Твърде много неуспешни опити за влизане от вашия адрес; опитайте отново по-късно"
        }
        Text::LoggedIn {
            messages: n,
            octets: o,
        } => {
            return write!(
                f,
                "Влязохте, в пощенската кутия има {n} {} ({o} {})",
                messages(n),
                octets(o)
            );
        }
        Text::Listing {
            messages: n,
            octets: o,
        } => return write!(f, "{n} {} ({o} {})", messages(n), octets(o)),
        Text::MaildropHas {
            messages: n,
            octets: o,
        } => {
            return write!(
                f,
                "В пощенската кутия има {n} {} ({o} {})",
                messages(n),
                octets(o)
            );
        }
        Text::UidlFollows => "Следва списъкът с уникални идентификатори",
        Text::CapaFollows => "Следва списъкът с възможности",
        Text::Octets(n) => return write!(f, "{n} {}", octets(n)),
        Text::TopFollows => "Следва началото на съобщението",
        Text::NoSuchMessage => "Няма такова съобщение",
        Text::NoSuchMessageOf { messages: n } => {
            return write!(
                f,
                "Няма такова съобщение, в пощенската кутия има само {n} {}",
                messages(n)
            );
        }
        Text::MessageIsDeleted(n) => return write!(f, "Съобщение {n} е маркирано за изтриване"),
        Text::MessageDeleted(n) => return write!(f, "Съобщение {n} е изтрито"),
        Text::AlreadyDeleted(n) => return write!(f, "Съобщение {n} вече е изтрито"),
        Text::MessageUnreadable(n) => {
            return write!(
                f,
                "Съобщение {n} не може да бъде прочетено; опитайте отново по-късно"
            );
        }
        Text::MaildropInUse => {
            "Пощенската кутия е заключена от друга POP3 сесия; опитайте отново по-късно"
        }
        Text::MaildropTemporary => {
            "Пощенската кутия временно не е достъпна; опитайте отново по-късно"
        }
        Text::MaildropPermanent => {
            "Пощенската кутия не е достъпна; свържете се с администратора на пощата"
        }
        Text::Evicted => {
            "Сървърът е достигнал лимита си за връзки, а тази връзка не е влязла; опитайте отново след малко"
        }
        Text::ShuttingDown => "Сървърът спира; опитайте отново след малко",
        Text::MaildropLost => {
            "Заключването на пощенската кутия беше загубено (хранилището за поща отказа); нищо не е изтрито. Влезте отново след малко"
        }
        Text::Kicked => {
            "Сесията ви беше прекратена от администратора на сървъра; нищо не е изтрито"
        }
        Text::AtAddressLimit => "Твърде много връзки от вашия адрес; опитайте отново след малко",
        Text::AtConnectionLimit => {
            "Сървърът е достигнал лимита си за връзки; опитайте отново след малко"
        }
        Text::TooManyBadCommands => "Твърде много невалидни команди, връзката се затваря",
        Text::LineTooLong => "Редът е твърде дълъг",
        Text::WrongState { keyword, logged_in } => {
            let when = if logged_in { "след" } else { "преди" };
            return write!(f, "{keyword} не е валидна команда {when} влизане");
        }
        Text::Invalid(e) => match e {
            ParseError::Empty => "Празна команда",
            ParseError::ContainsNul => "Командата съдържа октет NUL",
            ParseError::UnknownCommand => "Непозната команда",
            ParseError::MissingArgument => "Липсва аргумент",
            ParseError::TooManyArguments => "Твърде много аргументи",
            ParseError::InvalidNumber => "Невалидно число",
            ParseError::NoSuchMessage => "Няма такова съобщение",
            ParseError::InvalidName => "Невалидно име",
            ParseError::InvalidDigest => "Невалиден APOP хеш",
            ParseError::InvalidMechanism => "Невалидно име на механизъм на SASL",
        },
        Text::LanguagesFollow => "Следва списъкът с езици",
        Text::LanguageChanged => "Отговорите вече са на български",
        Text::NoSuchLanguage(range) => {
            return write!(
                f,
                "Няма език, отговарящ на {range}; LANG показва наличните езици"
            );
        }
        Text::InvalidLanguageRange => "Това не е езиков етикет; задайте например bg или en",
        Text::EnvelopeFollows => "Следва пликът на съобщението",
        Text::NoEnvelope(n) => {
            return write!(f, "За съобщение {n} не е записан плик");
        }
    };
    f.write_str(s)
}
